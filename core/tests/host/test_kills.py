"""Kills carried out without a service owning the run (host/kills.py), on the dummy backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host import kills, queries
from jobfleet.core.host.ledger import Ledger, TaskInstance
from jobfleet.core.host.runs import ServiceOptions, create_run
from jobfleet.core.host.taskfile import TaskDefinition

FAST = ServiceOptions(poll_interval=0.01, max_poll_interval=0.05)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(str(tmp_path / "ledger.db"))
    yield opened
    opened.close()


def new_run(ledger: Ledger, *names: str) -> int:
    tasks = [TaskDefinition(name=name, command="true") for name in names]
    return create_run(ledger, tasks, cluster="dummy", options=FAST)


def instance_ids(ledger: Ledger, run_id: int) -> list[int]:
    with ledger.read_session() as session:
        query = select(TaskInstance.id).where(TaskInstance.run_id == run_id)
        return list(session.scalars(query.order_by(TaskInstance.id)))


def test_a_run_nobody_owns_is_killed_here(ledger: Ledger) -> None:
    run_id = new_run(ledger, "a", "b")
    result = kills.kill(ledger, str(run_id))
    assert result.carried_out_here
    assert result.status == "killed"
    assert result.killed == instance_ids(ledger, run_id)


def test_one_instance_is_killed_and_the_rest_of_the_run_goes_on(ledger: Ledger) -> None:
    run_id = new_run(ledger, "a", "b")
    first, second = instance_ids(ledger, run_id)
    result = kills.kill(ledger, None, [first])
    assert (result.run_id, result.killed, result.carried_out_here) == (run_id, [first], True)
    assert result.status == "running"
    assert not kills.owner_is_alive(ledger, run_id)  # the service gave the run up again
    assert second not in result.killed


def test_instances_of_two_runs_are_refused(ledger: Ledger) -> None:
    ids = [instance_ids(ledger, new_run(ledger, name))[0] for name in ("a", "b")]
    with pytest.raises(JobfleetError, match="different runs"):
        kills.kill(ledger, None, ids)


def test_a_run_that_is_over_is_not_killed(ledger: Ledger) -> None:
    run_id = new_run(ledger, "a")
    kills.kill(ledger, str(run_id))
    with pytest.raises(JobfleetError, match="already over"):
        kills.kill(ledger, str(run_id))


# SQLite's limit on bound parameters before 3.32, the smallest in use (Debian's build allows
# 250000, which is why a run of 40,000 tasks was killed fine and one of 250,000 was not).
OLD_SQLITE_VARIABLE_LIMIT = 999


@pytest.mark.slow
def test_a_run_of_over_100_000_pending_instances_is_killed(ledger: Ledger) -> None:
    @event.listens_for(ledger.engine, "connect")
    def _few_variables(connection: Any, _record: Any) -> None:
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_SQLITE_VARIABLE_LIMIT)

    ledger.engine.dispose()  # every connection from now on has the limit
    size = 110_000
    tasks = [TaskDefinition(name=f"t{n}", command="true") for n in range(size)]
    run_id = create_run(ledger, tasks, cluster="dummy", options=FAST)  # bulk INSERTs
    result = kills.kill(ledger, str(run_id))
    assert (result.status, len(result.killed), result.carried_out_here) == ("killed", size, True)
    with ledger.read_session() as session:
        assert queries.task_counts(session, run_id) == {"killed": size}
        assert queries.state_counts(session, run_id) == {"K": size}
