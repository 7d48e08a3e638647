"""Ending attempts, and what follows each in the same transaction: its retry or its task's end.

Every step that ends attempts collects them in a `Round` with `end()`, then writes them with
`commit()`: the transitions, the tasks that are over, and the new attempts (see retry.py for
how a retry's resources are chosen).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from jobfleet.core.host.ledger import (
    Change,
    InstanceState,
    Task,
    TaskInstance,
    TaskState,
    apply_changes,
    in_batches,
    utcnow,
)
from jobfleet.core.host.ledger.models import Event as LedgerEvent
from jobfleet.core.host.queues import queue_limits
from jobfleet.core.host.retry import DEFAULT_SCALE, RetryDecision, decide_retry
from jobfleet.core.host.service.context import NO_SYNC, RunContext, S
from jobfleet.core.resources import QueueLimits

# Attempts lost with a crashed host (never started) that are retried without counting.
_MAX_FREE_RETRIES: Final = 10
# Endings after which the task is over whatever its attempt budget says.
_TASK_OVER: Final = {S.DONE: TaskState.DONE, S.KILL_SELF: TaskState.KILLED}


@dataclass
class Ended:
    """An attempt that ended in this round, with what is needed to decide what follows."""

    instance_id: int
    task_id: int
    attempt: int
    state: InstanceState
    resources: Mapping[str, Any]
    reason: str | None
    maxrss: int | None
    free: bool = False
    """Lost with a host that crashed before it ever started: it does not use up an attempt."""


@dataclass
class Round:
    """The transitions a step collected, and the attempts among them that ended."""

    changes: list[Change] = field(default_factory=list)
    ended: list[Ended] = field(default_factory=list)


_Retry = tuple[Ended, Task, RetryDecision]


def end(
    context: RunContext,
    work: Round,
    row: Any,
    target: InstanceState,
    message: str,
    values: Mapping[str, Any] | None,
    *,
    state: InstanceState | None = None,
    free: bool | None = None,
) -> None:
    """Add to `work` the end of `row`'s attempt in `target` (from `state`, else its own)."""
    current = state or S(row.state)
    if free is None:
        free = target is S.UNKNOWN_ERROR and _lost_with_old_host(context, row)
    work.changes.append(
        Change(row.id, context.run_id, current, target, message, values=dict(values or {}))
    )
    record = (values or {}).get("exit_record") or {}
    work.ended.append(
        Ended(
            row.id,
            row.task_id,
            row.attempt,
            target,
            dict(row.requested_resources),
            record.get("reason"),
            (values or {}).get("maxrss"),
            free,
        )
    )


def _lost_with_old_host(context: RunContext, row: Any) -> bool:
    """Submitted by a service before this one, and never started: lost with its host."""
    submitted = getattr(row, "submitted_at", None)
    started = getattr(row, "started_at", None)
    return started is None and submitted is not None and submitted < context.started_at


def commit(context: RunContext, session: Session, work: Round) -> None:
    """Write the round's transitions, then what follows each ended attempt."""
    apply_changes(session, work.changes)
    if not work.ended:
        return
    context.ended.update(ended.instance_id for ended in work.ended)  # specs to withdraw
    # Only the attempts whose follow-up must be decided need their task's row: a run's kill
    # of a hundred thousand attempts loads none.
    tasks = _tasks_of(session, [e for e in work.ended if e.state not in _TASK_OVER])
    limits = queue_limits(context.queues)
    retries: list[_Retry] = []
    over: dict[TaskState, list[int]] = defaultdict(list)
    for ended in work.ended:
        if ended.state in _TASK_OVER:
            over[_TASK_OVER[ended.state]].append(ended.task_id)
            continue
        task = tasks[ended.task_id]
        decision = _decide(task, ended, limits)
        if decision.retry:
            retries.append((ended, task, decision))
        else:
            over[TaskState.FAILED].append(task.id)
            _note(context, session, ended.instance_id, "gave_up", f"task over: {decision.message}")
    _mark_tasks(session, over)
    _add_retries(context, session, retries)


def _tasks_of(session: Session, ended: Sequence[Ended]) -> dict[int, Task]:
    tasks: dict[int, Task] = {}
    for batch in in_batches({e.task_id for e in ended}):
        tasks.update(
            (task.id, task) for task in session.scalars(select(Task).where(Task.id.in_(batch)))
        )
    return tasks


def _decide(task: Task, ended: Ended, limits: Mapping[str, QueueLimits]) -> RetryDecision:
    """Whether (and with what) the task gets another attempt after `ended`."""
    free_retries = int(task.options.get("free_retries", 0))
    if ended.free and free_retries < _MAX_FREE_RETRIES:
        # Not the task's fault: the next attempt does not count against max_attempts.
        free_retries += 1
        task.options = {**task.options, "free_retries": free_retries}
    return decide_retry(
        ended.state,
        attempt=ended.attempt - free_retries,
        max_attempts=task.max_attempts,
        resources=ended.resources,
        reason=ended.reason,
        queue_limits=limits,
        scale=float(task.options.get("resource_scale", DEFAULT_SCALE)),
        fallback_queues=task.options.get("fallback_queues", ()),
        maxrss=ended.maxrss,
    )


def _mark_tasks(session: Session, over: Mapping[TaskState, list[int]]) -> None:
    for task_state, ids in over.items():
        for batch in in_batches(ids):
            session.execute(
                update(Task).where(Task.id.in_(batch)).values(state=task_state.value),
                execution_options=NO_SYNC,
            )


def _add_retries(context: RunContext, session: Session, retries: Sequence[_Retry]) -> None:
    """The next attempts (state Q), each with its transition event (and its adjustment)."""
    if not retries:
        return
    now = utcnow()
    new_ids = session.scalars(
        insert(TaskInstance).returning(TaskInstance.id, sort_by_parameter_order=True),
        [
            {
                "task_id": task.id,
                "run_id": context.run_id,
                "attempt": ended.attempt + 1,
                "state": S.QUEUED.value,
                # A plain retry asks for what the task asked for (coercion runs again).
                "requested_resources": decision.resources or dict(task.resources),
                "created_at": now,
                "state_at": now,
            }
            for ended, task, decision in retries
        ],
    ).all()
    events = []
    for new_id, (ended, _task, decision) in zip(new_ids, retries, strict=True):
        events.extend(_retry_events(context.run_id, new_id, ended, decision, now))
    session.execute(insert(LedgerEvent), events)


def _retry_events(
    run_id: int, new_id: int, ended: Ended, decision: RetryDecision, now: datetime
) -> list[dict[str, Any]]:
    queued = event_row(
        run_id,
        new_id,
        "transition",
        decision.message,
        now,
        {"retry_of": ended.instance_id},
        to_state=S.QUEUED.value,
    )
    if not decision.changes:
        return [queued]
    scaled = event_row(
        run_id,
        new_id,
        "adjustment",
        f"scaled after a resource error: {decision.message}",
        now,
        {"changes": decision.changes, "from": dict(ended.resources), "to": decision.resources},
    )
    return [queued, scaled]


def _note(
    context: RunContext,
    session: Session,
    instance_id: int,
    kind: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append one event that is not a transition (a task given up, …)."""
    session.execute(
        insert(LedgerEvent),
        [event_row(context.run_id, instance_id, kind, message, utcnow(), dict(details or {}))],
    )


def event_row(
    run_id: int,
    instance_id: int | None,
    kind: str,
    message: str,
    at: datetime,
    details: Mapping[str, Any],
    *,
    to_state: str | None = None,
) -> dict[str, Any]:
    """An event as a row for a bulk INSERT."""
    return {
        "run_id": run_id,
        "task_instance_id": instance_id,
        "kind": kind,
        "from_state": None,
        "to_state": to_state,
        "at": at,
        "message": message,
        "details": dict(details),
    }
