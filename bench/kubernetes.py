"""`jobfleet run --cluster kubernetes` on the loopback emulator against one raw Indexed Job.

    uv run python bench/kubernetes.py [--tasks 1000] [--cpus 16] [--json]

Starts the loopback Kubernetes API server of plugins/kubernetes/tests/kube_emulator (loaded by
path, as the tests' conftest does) with one extra node, `bench`, advertising `--cpus` CPUs
(tainted, so that only the benchmark's pods, which tolerate it, run there), and stops it at the
end. Both sides run `--tasks` pods of 1 core and 64 MiB each on that node, so at most `--cpus`
run at once, as local processes of the emulator's kubelet:

1. Baseline: one Indexed Job created directly (`completions` = tasks, `parallelism` = tasks,
   container `sh -c true`), then one GET of the Job every 0.5 s until it is Complete. Timed
   from the create to the first Complete answer.
2. jobfleet: a plain-text task file of N lines of `true`, run by the real CLI
   `jobfleet run --cluster kubernetes --json tasks.txt` (the host, its http channel, the
   distributor: one Indexed Job, two watch streams) in a new working directory. Timed from
   starting the process to its exit, every task done. Each pod runs the worker-node wrapper
   around `true`, so jobfleet does more per task than the baseline: that is part of what is
   measured.

Printed: both wall times, their ratio (jobfleet / baseline), and the API requests of each side
by verb and resource as the emulator counted them. Target: 1 create per array and no request
per status round (status comes from the watches), so the jobfleet run's list/get count does
not grow with the tasks. Nothing here is asserted by a test: the machine is shared and noisy.
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
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's directory comes first on sys.path, and its name would hide the
# `kubernetes` client package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
TAINT = {"key": "jobfleet.io/bench", "value": "true", "effect": "NoSchedule"}


def load_emulator() -> ModuleType:
    package = ROOT / "plugins" / "kubernetes" / "tests" / "kube_emulator"
    spec = importlib.util.spec_from_file_location(
        "kube_emulator", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kube_emulator"] = module
    spec.loader.exec_module(module)
    return module


def placement() -> dict[str, Any]:
    return {
        "nodeSelector": {"kubernetes.io/hostname": "bench"},
        "tolerations": [{"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"]}],
    }


def baseline(emu: Any, tasks: int) -> float:
    """One Indexed Job made directly, polled until Complete; seconds from create to done."""
    client = emu.api_client()
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "baseline", "labels": {"bench": "baseline"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": tasks,
            "parallelism": tasks,
            "backoffLimitPerIndex": 0,
            "backoffLimit": 2147483647,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "task",
                            "image": "busybox:1",
                            "command": ["sh", "-c", "true"],
                            "resources": {
                                "requests": {"cpu": "1", "memory": "64Mi"},
                                "limits": {"memory": "64Mi"},
                            },
                        }
                    ],
                    **placement(),
                }
            },
        },
    }
    path = "/apis/batch/v1/namespaces/default/jobs"
    started = time.monotonic()
    call(client, "POST", path, body)
    while True:
        job = call(client, "GET", f"{path}/baseline")
        conditions = (job.get("status") or {}).get("conditions") or []
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in conditions
        ):
            elapsed = time.monotonic() - started
            break
        time.sleep(0.5)
    call(client, "DELETE", f"{path}/baseline", {"propagationPolicy": "Background"})
    return elapsed


def call(client: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    _m, url, headers, _b, _p = client.param_serialize(
        method=method,
        resource_path=path,
        auth_settings=["BearerToken"],
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
    )
    response = client.rest_client.pool_manager.request(
        method, url, headers=headers, body=json.dumps(body) if body is not None else None
    )
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {response.data[:300]!r}")
    return dict(json.loads(response.data or b"{}"))


def jobfleet_run(emu: Any, tasks: int, work: Path) -> float:
    work.mkdir()
    (work / "tasks.txt").write_text("true\n" * tasks)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(
        {
            "JOBFLEET_KUBERNETES_KUBECONFIG": str(emu.kubeconfig),
            "JOBFLEET_KUBERNETES_NODE_SELECTOR": "kubernetes.io/hostname=bench",
            "JOBFLEET_KUBERNETES_TOLERATED_TAINTS": f"{TAINT['key']}={TAINT['value']}",
            "JOBFLEET_KUBERNETES_DEFAULT_MEMORY": "64M",
        }
    )
    jobfleet = shutil.which("jobfleet")
    assert jobfleet, "the jobfleet console script is not installed"
    started = time.monotonic()
    result = subprocess.run(
        [jobfleet, "run", "--cluster", "kubernetes", "--cores", "1", "--json", "tasks.txt"],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    elapsed = time.monotonic() - started
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0 or summary.get("status") != "done":
        raise RuntimeError(f"jobfleet run failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed


def counts(emu: Any) -> dict[str, int]:
    return {f"{verb} {resource}": n for (verb, resource), n in sorted(emu.requests.items())}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    emulator = load_emulator()
    root = Path(tempfile.mkdtemp(prefix="jobfleet-bench-kubernetes-"))
    emu = emulator.KubeEmulator(root)
    try:
        emu.add_node("bench", cpu=str(args.cpus), memory="64Gi", taints=[TAINT])
        emu.reset_counts()
        base = baseline(emu, args.tasks)
        base_calls = counts(emu)
        emu.wait_for(lambda: not emu.objects("pods"), timeout=120)
        emu.reset_counts()
        mine = jobfleet_run(emu, args.tasks, root / "run")
        my_calls = counts(emu)
    finally:
        emu.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "tasks": args.tasks,
        "cpus": args.cpus,
        "baseline_s": round(base, 2),
        "jobfleet_s": round(mine, 2),
        "ratio": round(mine / base, 2),
        "baseline_requests": base_calls,
        "jobfleet_requests": my_calls,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.tasks} tasks, {args.cpus} CPUs on the bench node")
    print(f"baseline (one raw Indexed Job): {base:.1f} s")
    print(f"jobfleet run --cluster kubernetes: {mine:.1f} s")
    print(f"ratio jobfleet / baseline: {mine / base:.2f}")
    print("API requests, baseline:", json.dumps(base_calls))
    print("API requests, jobfleet:", json.dumps(my_calls))
    flat = Counter({k: v for k, v in my_calls.items() if k.split()[0] in ("list", "get")})
    print(f"list/get requests of the jobfleet run (not per round): {sum(flat.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
