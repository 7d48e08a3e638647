"""Kills carried out without a service owning the run (host/kills.py), on the dummy backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host import kills
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
