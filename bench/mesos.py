"""`jobfleet run --cluster mesos` on the loopback master against the multiprocess backend.

    uv run python bench/mesos.py [--tasks 1000] [--agent-cpus 2] [--cores 0.25] [--json]

Starts the loopback Mesos master of plugins/mesos/tests/mesos_emulator (loaded by path, as the
tests' conftest does) with 2 agents of `--agent-cpus` CPUs each, and stops it at the end. Both
sides run a plain-text task file of `--tasks` lines of `true` through the real CLI, in fresh
working directories, timed from starting the process to its exit with every task done:

1. multiprocess: `jobfleet run --cluster multiprocess --json tasks.txt` (a local pool on this
   machine, a file channel);
2. mesos: `jobfleet run --cluster mesos --cores C --json tasks.txt` (the host, its http channel,
   the scheduler in the host; tasks of C cores, so 2 × agent-cpus / C run at once, each through
   jobfleet's executor and the worker-node wrapper, as local processes of the emulator's agents).

Printed: both wall times, their ratio (mesos / multiprocess), and the scheduler calls the
master counted, by type and per task. Target: far fewer than one ACCEPT per task (offers are
packed), no call per status round, one ACKNOWLEDGE per status update. Nothing here is asserted
by a test: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXECUTOR_MODULE = "jobfleet.plugins.mesos.executor"


def load_emulator() -> ModuleType:
    package = ROOT / "plugins" / "mesos" / "tests" / "mesos_emulator"
    spec = importlib.util.spec_from_file_location(
        "mesos_emulator", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mesos_emulator"] = module
    spec.loader.exec_module(module)
    return module


def run(cluster: str, tasks: int, work: Path, extra_env: dict[str, str], *args: str) -> float:
    work.mkdir()
    (work / "tasks.txt").write_text("true\n" * tasks)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(extra_env)
    environ["JOBFLEET_LEDGER"] = str(work / "ledger.db")
    jobfleet = shutil.which("jobfleet")
    assert jobfleet, "the jobfleet console script is not installed"
    started = time.monotonic()
    result = subprocess.run(
        [jobfleet, "run", "--cluster", cluster, *args, "--json", "tasks.txt"],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=7200,
    )
    elapsed = time.monotonic() - started
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0 or summary.get("status") != "done":
        raise RuntimeError(
            f"{cluster}: jobfleet run failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--agent-cpus", type=float, default=2.0)
    parser.add_argument("--cores", type=float, default=0.25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    emulator = load_emulator()
    root = Path(tempfile.mkdtemp(prefix="jobfleet-bench-mesos-"))
    mc: Any = None
    try:
        local = run("multiprocess", args.tasks, root / "multiprocess", {})
        mc = emulator.MesosCluster(root / "emulator", agents=0)
        for _ in range(2):
            mc.add_agent(cpus=args.agent_cpus, mem=16384, disk=10000)
        mc.reset_counts()
        env = {
            "JOBFLEET_MESOS_MASTER": mc.master,
            "JOBFLEET_MESOS_EXECUTOR_COMMAND": f"{sys.executable} -m {EXECUTOR_MODULE}",
            "JOBFLEET_MESOS_WORKER_COMMAND": str(
                Path(sys.executable).with_name("jobfleet-worker-node")
            ),
            "JOBFLEET_MESOS_DEFAULT_MEMORY": "64M",
        }
        mine = run("mesos", args.tasks, root / "mesos", env, "--cores", f"{args.cores:g}")
        calls = dict(sorted(mc.calls.items()))
        total = sum(calls.values())
    finally:
        if mc is not None:
            mc.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "tasks": args.tasks,
        "agents": 2,
        "agent_cpus": args.agent_cpus,
        "task_cores": args.cores,
        "multiprocess_s": round(local, 2),
        "mesos_s": round(mine, 2),
        "ratio": round(mine / local, 2),
        "scheduler_calls": calls,
        "scheduler_calls_per_task": round(total / args.tasks, 3),
        "calls_per_task_without_acknowledge": round(
            (total - calls.get("ACKNOWLEDGE", 0)) / args.tasks, 3
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
