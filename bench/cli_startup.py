"""How long the `jobfleet` command takes to start and answer: `--help`, `version`, `status`.

    uv run python bench/cli_startup.py [--runs 15]

Each command is run `--runs` times as a user runs it (the installed console script, a new
process each time), the commands taking turns so that a burst of load on the shared machine
hits them all alike. It prints each command's median wall time and, as the baselines measured
in the same run, its ratio to the median of `python -c pass` (the interpreter's own start) and
of `python -c "import click"` (the least a click program can import). `status` reads a small
SQLite ledger made for the run (one run of 20 tasks, created with the dummy backend); the time
of `python -c "import sqlalchemy.orm"` is printed beside it, as the least any command that
reads the ledger through SQLAlchemy's ORM can take.

Targets (issue 11): `--help` and `version` at most 300 ms, `status` at most 600 ms. Nothing here
is asserted by a test; the machine is shared and noisy, so the ratios mean more than the times.
The script compiles jobfleet's bytecode first, as installing a wheel does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker_overhead import compile_bytecode

from jobfleet.core.host.ledger import Ledger
from jobfleet.core.host.runs import create_run
from jobfleet.core.host.taskfile import TaskDefinition

TARGETS = {"--help": 0.3, "version": 0.3, "status": 0.6, "status 1": 0.6}


def make_ledger(root: Path) -> Path:
    """A ledger with one run of 20 tasks (not run: `status` only reads them)."""
    path = root / "ledger.db"
    tasks = [TaskDefinition(name=f"task-{n}", command="true") for n in range(20)]
    with Ledger.open(path) as ledger:
        create_run(ledger, tasks, cluster="dummy", work_root=root / "runs")
    return path


def commands(ledger: Path) -> dict[str, list[str]]:
    jobfleet = str(Path(sys.executable).with_name("jobfleet"))
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "python -c 'import sqlalchemy.orm'": [sys.executable, "-c", "import sqlalchemy.orm"],
        "--help": [jobfleet, "--help"],
        "version": [jobfleet, "version"],
        "status": [jobfleet, "status", "--ledger", str(ledger)],
        "status 1": [jobfleet, "status", "1", "--ledger", str(ledger)],
    }


def time_once(argv: list[str], environ: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Runs of each command.")
    args = parser.parse_args()
    compile_bytecode()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    with tempfile.TemporaryDirectory() as tmp:
        argvs = commands(make_ledger(Path(tmp)))
        times: dict[str, list[float]] = {name: [] for name in argvs}
        for argv in argvs.values():  # a first run of each, not counted: warm file caches
            time_once(argv, environ)
        for _ in range(args.runs):
            for name, argv in argvs.items():
                times[name].append(time_once(argv, environ))
    medians = {name: statistics.median(found) for name, found in times.items()}
    bare, click = medians["python -c pass"], medians["python -c 'import click'"]
    print(f"{args.runs} runs each, median wall time; ratios to the baselines measured beside them")
    for name, median in medians.items():
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f"  target {target * 1000:.0f} ms: " + ("met" if median <= target else "NOT met")
        )
        print(
            f"{name:34} {median * 1000:7.1f} ms  ×{median / bare:5.1f} python -c pass  "
            f"×{median / click:4.1f} import click{verdict}"
        )


if __name__ == "__main__":
    main()
