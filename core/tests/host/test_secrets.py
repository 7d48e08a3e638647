"""A task's secrets and the ledger's credentials stay where they belong.

Everything a run writes is owner-only whatever the umask; a spec (which holds the task's
`env`) is removed once its attempt is over; and no task sees the ledger's URL or password,
however the host got them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from jobfleet.core.channel import TaskSpec, open_channel
from jobfleet.core.host.ledger import Ledger, Run, RunStatus
from jobfleet.core.host.runs import create_run
from jobfleet.core.host.service import DistributorService
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.core.testing.host import wait_for

from .conftest import PG_PASSWORD, PostgresServer
from .test_service import FAST, instances

SECRET = "s3cret-token-value"  # noqa: S105


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The host (and so its wrappers) under this umask."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def modes_under(root: Path) -> dict[str, int]:
    """The permission bits of `root` and of everything below it, by path."""
    found = {str(root): stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def not_owner_only(root: Path) -> dict[str, str]:
    """What under `root` anyone but its owner could read: files not 0600, directories not 0700."""
    return {
        path: oct(mode)
        for path, mode in modes_under(root).items()
        if mode != (0o700 if Path(path).is_dir() else 0o600)
    }


def channel_files(work_dir: str, part: str) -> list[str]:
    return sorted(path.name for path in Path(work_dir, "channel", part).iterdir())


def gated_run(ledger: Ledger, tmp_path: Path) -> tuple[int, Path]:
    """A run whose task "held" waits for a gate file, beside one that fails once (retried) and
    one that succeeds at once; every task has the secret in its env."""
    gate, marker = tmp_path / "go", tmp_path / "failed-once"
    commands = {
        "flaky": f'test -e {marker} || {{ touch {marker}; exit 3; }}; echo "$TOKEN" | wc -c',
        "quick": "true",
        "held": f"while [ ! -e {gate} ]; do sleep 0.05; done",
    }
    definitions = [
        TaskDefinition(name=name, command=command, env={"TOKEN": SECRET}, max_attempts=2)
        for name, command in commands.items()
    ]
    return create_run(ledger, definitions, cluster="multiprocess", options=FAST), gate


def letters(ledger: Ledger, run_id: int) -> str:
    """The states of the run's instances, sorted: "DDER" is two done, one failed, one running."""
    return "".join(sorted(row.state for row in instances(ledger, run_id)))


def work_dir_of(ledger: Ledger, run_id: int) -> str:
    with ledger.read_session() as session:
        work_dir = session.scalar(select(Run.work_dir).where(Run.id == run_id))
    assert work_dir is not None
    return work_dir


def test_everything_a_run_writes_is_owner_only(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "project"  # made by jobfleet, under the umask
    with Ledger.open(root / ".jobfleet" / "ledger.db") as ledger:
        run_id, gate = gated_run(ledger, tmp_path)
        service = DistributorService(ledger, run_id)
        service.start()
        try:
            # While "held" runs: its array's specs, the events and the logs are all there.
            wait_for(
                lambda: service.round() and "R" in letters(ledger, run_id),
                "a running task",
            )
            work_dir = work_dir_of(ledger, run_id)
            assert channel_files(work_dir, "arrays") != []
            assert channel_files(work_dir, "events") != []
            assert not_owner_only(root / ".jobfleet") == {}
            gate.touch()
            assert service.run_until_done().status is RunStatus.DONE
        finally:
            service.close()
        assert list(Path(work_dir, "logs").iterdir()) != []
        assert not_owner_only(root / ".jobfleet") == {}


def start_until_only_held_runs(
    ledger: Ledger, tmp_path: Path
) -> tuple[DistributorService, int, Path, str]:
    """A service of `gated_run`, once "flaky" failed once and its retry (an attempt with a spec
    of its own) ran and "quick" is done: only "held" runs. The service, run, gate, work dir."""
    run_id, gate = gated_run(ledger, tmp_path)
    service = DistributorService(ledger, run_id)
    service.start()
    try:
        wait_for(
            lambda: service.round() and letters(ledger, run_id) == "DDER",
            "every task but the held one over",
        )
    except BaseException:
        service.close()
        raise
    return service, run_id, gate, work_dir_of(ledger, run_id)


def test_a_spec_is_removed_once_its_attempt_is_over(ledger: Ledger, tmp_path: Path) -> None:
    service, _, gate, work_dir = start_until_only_held_runs(ledger, tmp_path)
    try:
        # The first array still holds the held task's spec; the retry's spec is gone.
        assert channel_files(work_dir, "specs") == []
        assert len(channel_files(work_dir, "arrays")) == 1
        gate.touch()
        assert service.run_until_done().status is RunStatus.DONE
    finally:
        service.close()
    assert channel_files(work_dir, "specs") == channel_files(work_dir, "arrays") == []
    # Nothing of the run's directory holds the tasks' secret any more (the ledger does).
    leaks = [p for p in Path(work_dir).rglob("*") if p.is_file() and SECRET in p.read_text()]
    assert leaks == []


def test_a_resumed_service_removes_the_specs_a_stopped_one_left(
    ledger: Ledger, tmp_path: Path
) -> None:
    service, run_id, gate, work_dir = start_until_only_held_runs(ledger, tmp_path)
    service.close()
    # As if the service had stopped between an attempt's end and its spec's removal.
    done = next(row for row in instances(ledger, run_id) if row.state == "D")
    leftover = TaskSpec(done.id, "true", "quick", run_id=run_id, environment={"TOKEN": SECRET})
    with open_channel(f"file://{work_dir}/channel") as channel:
        channel.put_spec(leftover)
    assert channel_files(work_dir, "specs") == [f"{done.id}.json"]
    gate.touch()
    resumed = DistributorService(ledger, run_id)
    resumed.start()
    try:
        assert channel_files(work_dir, "specs") == []
        resumed.run_until_done()
    finally:
        resumed.close()
    assert channel_files(work_dir, "specs") == channel_files(work_dir, "arrays") == []


# -- the ledger's credentials never reach a task ---------------------------------------------


def jobfleet(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobfleet.core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("JOBFLEET_", "PG"))}


def stdout_of_first_instance(ledger_url: str, run_id: int) -> str:
    with Ledger.open(ledger_url) as ledger:
        (row,) = instances(ledger, run_id)
    assert row.stdout_path is not None
    return Path(row.stdout_path).read_text()


def test_a_task_never_sees_the_ledger_url_or_password_of_its_host(tmp_path: Path) -> None:
    env = clean_environment()
    env["JOBFLEET_LEDGER"] = str(tmp_path / "ledger.db")
    env["PGPASSWORD"] = PG_PASSWORD  # libpq's, which a PostgreSQL ledger would read
    result = jobfleet(tmp_path, "run", "--json", "--", "env", env=env)
    assert result.returncode == 0, result.stderr
    printed = stdout_of_first_instance(str(tmp_path / "ledger.db"), 1)
    assert "PATH=" in printed  # the task did print its environment
    assert "JOBFLEET_TASK_INSTANCE_ID=" in printed
    assert "JOBFLEET_LEDGER" not in printed
    assert PG_PASSWORD not in printed
    assert str(tmp_path / "ledger.db") not in printed


def test_a_detached_run_keeps_the_postgresql_password_from_its_tasks(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    assert PG_PASSWORD in url
    gate = tmp_path / "go"
    command = f"env; while [ ! -e {gate} ]; do sleep 0.05; done"
    result = jobfleet(
        tmp_path, "run", "--detach", "--json", "--ledger", url, "--", "sh", "-c", command,
        env=clean_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    detached = json.loads(result.stdout)
    run_id, pid = detached["run"], detached["pid"]
    with Ledger.open(url) as ledger:
        wait_for(lambda: [row.state for row in instances(ledger, run_id)] == ["R"], "running")
        # Neither the service's environment nor its command line carries the password.
        assert PG_PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert PG_PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        gate.touch()
        wait_for(lambda: ledger_status(ledger, run_id) == "done", "the run done")
    printed = stdout_of_first_instance(url, run_id)
    assert "PATH=" in printed
    assert PG_PASSWORD not in printed
    assert "JOBFLEET_LEDGER" not in printed
    log = Path(detached["log"])
    assert PG_PASSWORD not in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def ledger_status(ledger: Ledger, run_id: int) -> str | None:
    with ledger.read_session() as session:
        return session.scalar(select(Run.status).where(Run.id == run_id))
