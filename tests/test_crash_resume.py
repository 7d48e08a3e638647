"""kill -9 of `jobfleet run` at random moments, then `--resume`: nothing twice, nothing lost.

Each task appends a line to a file of its own when it completes, so a task that ran to
completion twice shows two lines. The wrappers of the killed service keep running (each in its
own session) and report to the channel; the resumed service must account for them instead of
starting the tasks again.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from jobfleet.core.testing.host import wait_for

from .test_cli import JOBFLEET

TASKS = 12
KILLS = 5


def task_file(tmp_path: Path) -> Path:
    done = tmp_path / "done"
    done.mkdir()
    lines = ["tasks:"]
    for n in range(TASKS):
        # Tasks of different lengths, so kills land before, during and after them; most
        # outlive the restart of the service, so their wrappers must be found running.
        lines += [
            f"  - name: task-{n}",
            f"    command: sleep {0.5 * (n % 4 + 1)}; echo ran >> {done}/task-{n}",
        ]
    marker = tmp_path / "failed-once"
    lines += [
        "  - name: fails-once",
        f"    command: test -e {marker} || {{ touch {marker}; exit 3; }}; "
        f"echo ran >> {done}/fails-once",
    ]
    path = tmp_path / "tasks.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def events_in(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger, timeout=30) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is being created
            return 0


def start(argv: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    assert JOBFLEET
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    # Quick Slurm polling (the defaults spare a shared controller); other backends ignore it.
    environ.update(JOBFLEET_SLURM_POLL_MIN="0.2", JOBFLEET_SLURM_POLL_MAX="1")
    environ["JOBFLEET_LEDGER"] = str(tmp_path / "ledger.db")
    # A service killed with SIGKILL cannot remove its distributor's work directory: keep
    # those in the test's own directory rather than in /tmp.
    environ["TMPDIR"] = str(tmp_path)
    log = open(tmp_path / "service.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([JOBFLEET, *argv], cwd=tmp_path, env=environ, stdout=log, stderr=log)


@pytest.mark.parametrize(
    ("seed", "channel"), [(1, "file"), (2, "file"), (3, "file"), (1, "http"), (2, "http")]
)
def test_kill_9_and_resume_runs_every_task_exactly_once(
    tmp_path: Path, seed: int, channel: str
) -> None:
    """With the http channel, the wrappers that outlive a killed service retry their reports
    until the resumed service serves the run's channel again, on the same port."""
    tasks = task_file(tmp_path)
    _kill_and_resume(tmp_path, seed, ["run", str(tasks), "--json", "--channel", channel])


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_and_resume_of_packed_slurm_tasks_runs_each_once(
    tmp_path: Path, seed: int, slurm_cluster: object
) -> None:
    """Packed on Slurm (4 members per array element): a resumed service reads each member's
    element from its id, and an element's pack worker that outlives the service goes on."""
    tasks = task_file(tmp_path)
    argv = ["run", str(tasks), "--json", "--cluster", "slurm", "--pack", "max_tasks=4"]
    _kill_and_resume(tmp_path, seed, argv)
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        ids = [row[0] for row in connection.execute("SELECT distributor_id FROM task_instances")]
    # The first attempts ran packed (a lone retry is an array of one: nothing to pack).
    assert sum("+" in str(did) for did in ids) >= TASKS + 1, ids


def _kill_and_resume(tmp_path: Path, seed: int, argv: list[str]) -> None:
    chooser = random.Random(seed)  # noqa: S311 - reproducible moments, not secrets
    ledger = tmp_path / "ledger.db"
    kills = 0
    while kills < KILLS:
        service = start(argv, tmp_path)
        argv = ["run", "--resume", "1", "--json"]
        # A random point in the run's progress, then a random instant after it.
        target = events_in(ledger) + chooser.randint(1, 25)
        wait_for(
            lambda: events_in(ledger) >= target or service.poll() is not None,  # noqa: B023
            "the run to progress",
        )
        time.sleep(chooser.uniform(0, 0.2))  # the kill's moment is what is randomised
        if service.poll() is not None:
            break  # the run finished before this kill
        service.send_signal(signal.SIGKILL)
        service.wait()
        kills += 1
    final = start(["run", "--resume", "1", "--json"], tmp_path)
    assert final.wait(timeout=300) == 0 or _finished_already(tmp_path), _log(tmp_path)
    done = tmp_path / "done"
    names = [f"task-{n}" for n in range(TASKS)] + ["fails-once"]
    for name in names:
        assert (done / name).read_text() == "ran\n", f"{name} (seed {seed}): {_log(tmp_path)}"
    with sqlite3.connect(ledger) as connection:
        status = connection.execute("SELECT status FROM runs WHERE id = 1").fetchone()[0]
        states = dict(connection.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
    assert status == "done"
    assert states == {"done": TASKS + 1}


def _finished_already(tmp_path: Path) -> bool:
    # `--resume` of a run that an earlier service already finished says so and exits 1.
    return "already over (done)" in (tmp_path / "service.log").read_text()


def _log(tmp_path: Path) -> str:
    return (tmp_path / "service.log").read_text()[-3000:]
