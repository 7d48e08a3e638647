"""Carrying out the kill requests that `jobfleet kill` wrote to the ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from jobfleet.core.host.ledger import ACTIVE_STATES, Run, TaskInstance
from jobfleet.core.host.service.context import RunContext, S, load_instances
from jobfleet.core.host.service.reports import ingest_events
from jobfleet.core.host.service.retries import Round, commit, end


def handle_kills(context: RunContext) -> bool:
    """Stop the doomed instances on the backend and end them K; whether there were any."""
    doomed = _doomed(context)
    if not doomed:
        return False
    ids = [row.distributor_id for row in doomed if row.distributor_id]
    if ids:
        context.started_distributor().terminate_task_instances(ids)
    # Reports written while stopping (a task that finished first keeps its own outcome).
    ingest_events(context)
    with context.ledger.session() as session:
        work = Round()
        for row in load_instances(session, [row.id for row in doomed]):
            state = S(row.state)
            if state is S.QUEUED or state in ACTIVE_STATES:
                end(context, work, row, S.KILL_SELF, "killed on request", None)
        commit(context, session, work)
    return True


def _doomed(context: RunContext) -> list[Any]:
    """The instances not yet over that a kill request covers (all of them for a run's kill)."""
    with context.ledger.read_session() as session:
        run_killed = session.scalar(select(Run.kill_requested_at).where(Run.id == context.run_id))
        query = select(TaskInstance.id, TaskInstance.state, TaskInstance.distributor_id).where(
            TaskInstance.run_id == context.run_id,
            TaskInstance.state.in_([S.QUEUED.value, *[s.value for s in ACTIVE_STATES]]),
        )
        if run_killed is None:
            query = query.where(TaskInstance.kill_requested_at.is_not(None))
        return list(session.execute(query).all())
