"""Asking the backend, once per round, which of the run's launched instances it still has."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select

from jobfleet.core.host.ledger import TaskInstance
from jobfleet.core.host.service.context import LAUNCHED_STATES, RunContext


class BackendView(NamedTuple):
    """The launched instances (by ledger id) split by whether the backend still has them."""

    still_there: set[int]
    missing: set[int]


def query_backend(context: RunContext) -> BackendView:
    """One bulk `get_submitted_or_running` call for every launched instance with an id."""
    with context.ledger.read_session() as session:
        rows = session.execute(
            select(TaskInstance.id, TaskInstance.distributor_id).where(
                TaskInstance.run_id == context.run_id,
                TaskInstance.state.in_([s.value for s in LAUNCHED_STATES]),
                TaskInstance.distributor_id.is_not(None),
            )
        ).all()
    if not rows:
        return BackendView(set(), set())
    by_distributor_id = {row.distributor_id: row.id for row in rows}
    there = context.started_distributor().get_submitted_or_running(list(by_distributor_id))
    still = {iid for did, iid in by_distributor_id.items() if did in there}
    return BackendView(still, set(by_distributor_id.values()) - still)
