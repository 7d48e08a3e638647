"""Two ledgers in one directory: each run's work directory and channel belong to one run only.

Two SQLite ledgers side by side put their runs' work beside them, under one `runs/`: their
first runs are both run 1, and their first instances both instance 1. Nothing of one may reach
the other: no spec, no report, no usage.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobfleet.core.channel import FinalReport, UsageReport
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.host.ledger import Ledger, Run
from jobfleet.core.host.runs import create_run
from jobfleet.core.host.service import DistributorService
from jobfleet.core.host.taskfile import TaskDefinition

from .test_service import FAST, instances, run_to_end


def _tasks(tmp_path: Path, ledger: str, exit_code: int) -> list[TaskDefinition]:
    """Three tasks that each append one line to a file of their own and exit `exit_code`."""
    return [
        TaskDefinition(
            name=f"{ledger}{i}",
            command=f"echo ran >> {tmp_path / f'{ledger}{i}.out'}; exit {exit_code}",
            max_attempts=1,
        )
        for i in range(3)
    ]


def _check_outcomes(tmp_path: Path, ledger: Ledger, run_id: int, name: str, code: int) -> None:
    rows = instances(ledger, run_id)
    # Nothing lost or run twice: one attempt per task, each ran exactly once.
    assert len(rows) == 3
    for i in range(3):
        assert (tmp_path / f"{name}{i}.out").read_text() == "ran\n"
    assert {row.state for row in rows} == {"D" if code == 0 else "E"}
    assert {(row.exit_record or {}).get("exit_code") for row in rows} == {code}
    # Its usage is its own: every instance reports the work dir of its own run.
    with ledger.read_session() as session:
        work_dir = session.get_one(Run, run_id).work_dir
    assert work_dir is not None
    for row in rows:
        assert row.stdout_path is not None
        assert row.stdout_path.startswith(work_dir + "/")


def test_two_ledgers_in_one_directory_running_at_once_never_mix(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "a.db") as a, Ledger.open(tmp_path / "b.db") as b:
        run_a = create_run(a, _tasks(tmp_path, "a", 0), cluster="multiprocess", options=FAST)
        run_b = create_run(b, _tasks(tmp_path, "b", 5), cluster="multiprocess", options=FAST)
        assert run_a == run_b == 1  # the same run id, the same instance ids: the worst case
        services = [DistributorService(a, run_a), DistributorService(b, run_b)]
        for service in services:
            service.start()
        try:
            done: set[int] = set()
            while len(done) < 2:  # both driven round by round, side by side
                for number, service in enumerate(services):
                    if number not in done and service.round().status.value in ("done", "failed"):
                        done.add(number)
        finally:
            for service in services:
                service.close()
        _check_outcomes(tmp_path, a, run_a, "a", 0)
        _check_outcomes(tmp_path, b, run_b, "b", 5)
        with a.read_session() as one, b.read_session() as other:
            assert one.get_one(Run, run_a).work_dir != other.get_one(Run, run_b).work_dir


def test_a_second_ledger_never_reads_the_first_ones_reports(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "a.db") as a:
        run_a = create_run(a, _tasks(tmp_path, "a", 0), cluster="multiprocess", options=FAST)
        assert run_to_end(a, run_a).status.value == "done"
    with Ledger.open(tmp_path / "b.db") as b:
        run_b = create_run(b, _tasks(tmp_path, "b", 5), cluster="multiprocess", options=FAST)
        service = DistributorService(b, run_b)
        service.start()
        try:
            service.round()  # the first round: nothing of run b has started yet
            # No usage of ledger a's tasks, which had the same instance ids.
            assert {row.maxrss for row in instances(b, run_b)} == {None}
            assert service.run_until_done().status.value == "failed"
        finally:
            service.close()
        _check_outcomes(tmp_path, b, run_b, "b", 5)


def test_a_report_without_the_runs_token_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Ledger.open(tmp_path / "a.db") as ledger:
        run_id = create_run(ledger, _tasks(tmp_path, "a", 0)[:1], cluster="dummy", options=FAST)
        service = DistributorService(ledger, run_id)
        service.start()
        try:
            assert service.channel is not None
            (row,) = instances(ledger, run_id)
            usage = UsageReport(maxrss=123, cpu=1.0, wallclock=1.0)
            for token in ("not-this-runs", None):
                with service.channel.open_writer(row.id) as writer:
                    writer.run_token = token
                    writer.send_report(FinalReport(ErrorState.DONE, usage=usage))
            with caplog.at_level(logging.WARNING):
                service.round()
        finally:
            service.close()
        (row,) = instances(ledger, run_id)
        assert row.maxrss is None  # neither report was read
        assert "the run token 'not-this-runs', not this run's token" in caplog.text
        assert "no run token, not this run's token" in caplog.text
