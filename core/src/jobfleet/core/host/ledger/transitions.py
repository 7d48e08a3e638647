"""The one way a task instance changes state, and the event log that records it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from jobfleet.core.host.ledger.errors import LedgerError, TransitionError
from jobfleet.core.host.ledger.models import Event, Task, TaskInstance, utcnow
from jobfleet.core.host.ledger.states import InstanceState, check_transition

# The timestamp column each state sets on the instance (besides state_at).
_STAMPS: dict[InstanceState, str] = {
    InstanceState.LAUNCHED: "submitted_at",
    InstanceState.RUNNING: "started_at",
    **{state: "ended_at" for state in InstanceState if state.is_final},
}


def transition(
    session: Session,
    instance: TaskInstance,
    to_state: InstanceState | str,
    message: str = "",
    *,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> Event:
    """Move `instance` to `to_state` and append the event, in the session's transaction.

    Raises `TransitionError` (naming both states) for a move the table forbids, and also when
    another session changed the instance's state since it was read: the update only applies
    if the state in the database is still the one this session saw.
    """
    target = _state(instance, to_state)
    current = InstanceState(instance.state)
    why = check_transition(current, target)
    if why is not None:
        raise TransitionError(instance.id, current.value, target.value, why)
    moment = at or utcnow()
    values: dict[str, Any] = {"state": target.value, "state_at": moment}
    if target in _STAMPS:
        values[_STAMPS[target]] = moment
    _compare_and_set(session, instance, current, values)
    return _append(
        session,
        instance.run_id,
        "transition",
        message,
        details,
        moment,
        instance_id=instance.id,
        from_state=current.value,
        to_state=target.value,
    )


def _state(instance: TaskInstance, to_state: InstanceState | str) -> InstanceState:
    try:
        return InstanceState(to_state)
    except ValueError:
        letters = " ".join(state.value for state in InstanceState)
        raise TransitionError(
            instance.id, instance.state, str(to_state), f"it is not a state (states: {letters})"
        ) from None


def _compare_and_set(
    session: Session, instance: TaskInstance, current: InstanceState, values: dict[str, Any]
) -> None:
    session.flush()  # the instance must have an id, and pending changes must go first
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.id == instance.id, TaskInstance.state == current.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise TransitionError(
            instance.id, current.value, str(values["state"]), "another session changed it first"
        )
    # The row is written; tell the ORM so it neither re-sends nor reloads these columns.
    for key, value in values.items():
        set_committed_value(instance, key, value)


def record_event(
    session: Session,
    run_id: int,
    kind: str,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    instance: TaskInstance | None = None,
    at: datetime | None = None,
) -> Event:
    """Append an event that is not a state change (an adjustment, a kill request, a note)."""
    if kind == "transition":
        raise LedgerError("Transition events are written by transition() alone.")
    instance_id = instance.id if instance is not None else None
    return _append(session, run_id, kind, message, details, at or utcnow(), instance_id=instance_id)


def _append(
    session: Session,
    run_id: int,
    kind: str,
    message: str,
    details: Mapping[str, Any] | None,
    at: datetime,
    *,
    instance_id: int | None,
    from_state: str | None = None,
    to_state: str | None = None,
) -> Event:
    event = Event(
        run_id=run_id,
        task_instance_id=instance_id,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        at=at,
        message=message,
        details=dict(details or {}),
    )
    session.add(event)
    return event


def add_instance(
    session: Session,
    task: Task,
    requested_resources: Mapping[str, Any] | None = None,
    message: str = "",
) -> TaskInstance:
    """Create the task's next attempt, queued (Q), and log its creation.

    Raises `LedgerError` when the task has used up its `max_attempts`.
    """
    session.flush()
    done = session.scalar(
        select(func.coalesce(func.max(TaskInstance.attempt), 0)).where(
            TaskInstance.task_id == task.id
        )
    )
    attempt = int(done or 0) + 1
    if attempt > task.max_attempts:
        raise LedgerError(
            f"Task {task.id} ({task.name!r}) has used all of its {task.max_attempts} attempts."
        )
    resources = dict(requested_resources if requested_resources is not None else task.resources)
    instance = TaskInstance(
        task_id=task.id,
        run_id=task.run_id,
        attempt=attempt,
        state=InstanceState.QUEUED.value,
        requested_resources=resources,
    )
    session.add(instance)
    session.flush()
    _append(
        session,
        task.run_id,
        "transition",
        message or f"attempt {attempt} queued",
        None,
        instance.created_at,
        instance_id=instance.id,
        to_state=InstanceState.QUEUED.value,
    )
    return instance


@dataclass(frozen=True)
class Change:
    """One state change for `apply_changes`: the service's bulk form of `transition()`.

    `values` are other columns of the instance to set in the same UPDATE (its distributor id,
    exit record, usage…); `details` go into the event.
    """

    instance_id: int
    run_id: int
    from_state: InstanceState
    to_state: InstanceState
    message: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


def apply_changes(
    session: Session, changes: Sequence[Change], *, at: datetime | None = None
) -> None:
    """Apply many transitions with one UPDATE statement per column set and one bulk INSERT.

    The same rules as `transition()`: every move is checked against the table, each UPDATE only
    applies where the state is still `from_state`, and a `TransitionError` (rolling back the
    caller's transaction) says when any row had moved meanwhile.
    """
    if not changes:
        return
    moment = at or utcnow()
    for change in changes:
        why = check_transition(change.from_state, change.to_state)
        if why is not None:
            raise TransitionError(
                change.instance_id, change.from_state.value, change.to_state.value, why
            )
    session.flush()
    # Rows that set the same columns share one executemany UPDATE.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        row = {"state": change.to_state.value, "state_at": moment, **change.values}
        stamp = _STAMPS.get(change.to_state)
        if stamp is not None:
            row.setdefault(stamp, moment)  # a time the report gives wins over the ledger's
        key = tuple(sorted(row))
        row["_id"], row["_from"] = change.instance_id, change.from_state.value
        groups.setdefault(key, []).append(row)
    table = cast(Table, TaskInstance.__table__)
    for columns, rows in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("_id"), table.c.state == bindparam("_from"))
            .values({name: bindparam(name) for name in columns})
        )
        result = session.connection().execute(statement, rows)
        if result.rowcount != len(rows):
            first = rows[0]
            raise TransitionError(
                first["_id"], first["_from"], first["state"], "another session changed it first"
            )
    session.execute(
        insert(Event),
        [
            {
                "run_id": change.run_id,
                "task_instance_id": change.instance_id,
                "kind": "transition",
                "from_state": change.from_state.value,
                "to_state": change.to_state.value,
                "at": moment,
                "message": change.message,
                "details": dict(change.details),
            }
            for change in changes
        ],
    )
    # Objects of these instances loaded in this session would show the old state: drop them.
    for change in changes:
        loaded = session.identity_map.get(identity_key(TaskInstance, change.instance_id))
        if loaded is not None:
            session.expire(loaded)
