"""Triage: what became of instances the backend no longer has, or that went silent.

Such an instance goes to X (it never reported) or T (it was running), and the backend is
asked through `get_remote_exit_info`, at most every `triage_interval`: a final answer ends
the attempt; `finalized=False` means ask again; after `triage_timeout` the instance is
terminated on the backend and given up as U.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.host.ledger import Change, TaskInstance, apply_changes, in_batches, utcnow
from jobfleet.core.host.service.context import LAUNCHED_STATES, NO_SYNC, RunContext, S
from jobfleet.core.host.service.reports import backend_usage_values
from jobfleet.core.host.service.retries import Round, commit, end
from jobfleet.core.host.service.status import BackendView

log = logging.getLogger(__name__)


@dataclass
class _Questions:
    """What came of asking the backend about the silent instances."""

    undecided: list[int] = field(default_factory=list)
    """Instances the backend gave no final answer for (their triage count goes up)."""
    given_up: list[str] = field(default_factory=list)
    """Distributor ids to terminate: their instances were given up while the backend has them."""


def triage(context: RunContext, view: BackendView) -> bool:
    """Move silent instances to X or T, ask the backend about them; whether anything changed."""
    now = utcnow()
    silent = _silent(context, view.missing, now)
    if not silent:
        return False
    moves, moved_now = _move_to_triage(context, silent, view.missing)
    work = Round()
    questions = _ask_backend(context, silent, view.still_there, moved_now, now, work)
    if questions.given_up:
        # Never retry while the backend may still be running the old attempt.
        context.started_distributor().terminate_task_instances(questions.given_up)
    with context.ledger.session() as session:
        apply_changes(session, moves)
        commit(context, session, work)
        _count_questions(session, questions.undecided)
    return bool(moves or work.changes)


def _silent(context: RunContext, missing: set[int], now: datetime) -> list[TaskInstance]:
    """Launched instances the backend no longer has, already in triage, or silent too long."""
    deadline = now - timedelta(seconds=context.options.heartbeat_deadline)
    with context.ledger.read_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.run_id == context.run_id,
                TaskInstance.state.in_([s.value for s in LAUNCHED_STATES]),
            )
        ).all()
    return [
        row
        for row in rows
        if row.id in missing
        or S(row.state) in (S.TRIAGING, S.NO_HEARTBEAT)
        or (row.state == S.RUNNING.value and (row.heartbeat_at or row.started_at or now) < deadline)
    ]


def _move_to_triage(
    context: RunContext, silent: Sequence[TaskInstance], missing: set[int]
) -> tuple[list[Change], set[int]]:
    """O → X and R → T (the rows' states are updated in memory too); the changes, and the
    instances moved now."""
    moves: list[Change] = []
    moved_now: set[int] = set()
    for row in silent:
        state = S(row.state)
        if state is S.LAUNCHED:
            why = "the backend no longer has it, and it never reported"
            moves.append(Change(row.id, context.run_id, state, S.NO_HEARTBEAT, why))
            row.state = S.NO_HEARTBEAT.value
            moved_now.add(row.id)
        elif state is S.RUNNING:
            why = (
                "the backend no longer has it"
                if row.id in missing
                else "no heartbeat since " + _when(row.heartbeat_at or row.started_at)
            )
            moves.append(Change(row.id, context.run_id, state, S.TRIAGING, why))
            row.state = S.TRIAGING.value
            moved_now.add(row.id)
    return moves, moved_now


def _ask_backend(
    context: RunContext,
    silent: Sequence[TaskInstance],
    still_there: set[int],
    moved_now: set[int],
    now: datetime,
    work: Round,
) -> _Questions:
    """Ask about each silent instance not asked about lately; end those with an answer, and
    give up those silent longer than `triage_timeout`."""
    questions = _Questions()
    clock = time.monotonic()
    for row in silent:
        if clock - context.asked.get(row.id, 0.0) < context.options.triage_interval:
            continue
        context.asked[row.id] = clock
        info = _remote_exit_info(context, row.distributor_id)
        if info.finalized:
            _end_with_answer(context, work, row, info)
            continue
        questions.undecided.append(row.id)
        silent_since = now if row.id in moved_now else row.state_at
        if (now - silent_since).total_seconds() > context.options.triage_timeout:
            if row.distributor_id and row.id in still_there:
                questions.given_up.append(row.distributor_id)
            timeout = context.options.triage_timeout
            message = f"the backend gave no final answer in {timeout:g} s: {info.error_message}"
            end(context, work, row, S.UNKNOWN_ERROR, message, None, state=S(row.state))
    return questions


def _end_with_answer(
    context: RunContext, work: Round, row: TaskInstance, info: RemoteExitInfo
) -> None:
    values: dict[str, Any] = {
        "exit_record": info.record.to_dict()
        if info.record
        else {"reason": None, "message": info.error_message}
    }
    # The worker's report never came: the backend's accounting is all there is.
    values.update(backend_usage_values(context, row.id, info.usage))
    target = S(info.error_state.value)
    end(context, work, row, target, info.error_message, values, state=S(row.state))


def _remote_exit_info(context: RunContext, distributor_id: str | None) -> RemoteExitInfo:
    if not distributor_id:
        return RemoteExitInfo.unknown("it has no distributor id")
    try:
        return context.started_distributor().get_remote_exit_info(distributor_id)
    except Exception as exc:  # the protocol says it never raises; a plugin may still
        log.exception("get_remote_exit_info(%r) raised", distributor_id)
        return RemoteExitInfo.unknown(f"asking the backend failed: {exc}", finalized=False)


def _count_questions(session: Session, undecided: Sequence[int]) -> None:
    for batch in in_batches(undecided):
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.id.in_(batch))
            .values(triage_count=TaskInstance.triage_count + 1),
            execution_options=NO_SYNC,
        )


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"
