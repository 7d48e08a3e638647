"""Ingesting the worker reports that arrived on the channel: running, heartbeats, final reports.

Reports are applied by compare-and-set, so reading a report twice (after a crash, from an
older cursor) changes nothing. The cursor is saved in the same transaction as the changes.

The report-reading functions below (`_apply_reports` down to `_final_values`) read the
events' `data` dicts key by key; they are kept together so that they can move to typed reports
in one place.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobfleet.core.channel import Event, EventCursor, EventKind
from jobfleet.core.host.ledger import (
    Change,
    InstanceState,
    Run,
    TaskInstance,
    apply_changes,
    utcnow,
)
from jobfleet.core.host.service.context import NO_SYNC, RunContext, S, load_instances
from jobfleet.core.host.service.retries import Round, commit, end

log = logging.getLogger(__name__)

# The letters a final report may end an attempt with; anything else ends it U.
_ENDING_LETTERS: Final = {
    state.value
    for state in (
        S.DONE,
        S.ERROR_RECOVERABLE,
        S.RESOURCE_ERROR,
        S.UNKNOWN_ERROR,
        S.ERROR_FATAL,
        S.KILL_SELF,
    )
}


def ingest_events(context: RunContext) -> bool:
    """Apply the reports that arrived since the cursor; whether there were any."""
    events, cursor = context.started_channel().read_events(context.cursor)
    for problem in cursor.problems:
        log.warning("run %s: %s", context.run_id, problem)
    if not events:
        context.cursor = cursor
        return False
    by_instance: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_instance[event.task_instance_id].append(event)
    with context.ledger.session() as session:
        rows = {row.id: row for row in load_instances(session, list(by_instance))}
        catch_up, work = Round(), Round()
        notes: list[dict[str, Any]] = []
        for instance_id, instance_events in by_instance.items():
            row = rows.get(instance_id)
            if row is None or row.run_id != context.run_id:
                continue  # not ours (a channel shared by mistake): never touch it
            _apply_reports(context, row, instance_events, catch_up, work, notes)
        apply_changes(session, catch_up.changes)
        commit(context, session, work)
        _write_notes(session, notes)
        _save_cursor(context, session, cursor)
    context.cursor = cursor
    return True


def _write_notes(session: Session, notes: Sequence[dict[str, Any]]) -> None:
    """Columns updated without a transition: heartbeats, a late report's usage."""
    for values in notes:
        instance_id = values.pop("id")
        session.execute(
            update(TaskInstance).where(TaskInstance.id == instance_id).values(**values),
            execution_options=NO_SYNC,
        )


def _save_cursor(context: RunContext, session: Session, cursor: EventCursor) -> None:
    session.execute(
        update(Run).where(Run.id == context.run_id).values(event_cursor=cursor.to_dict())
    )


def _apply_reports(
    context: RunContext,
    row: Any,
    events: Sequence[Event],
    catch_up: Round,
    work: Round,
    notes: list[dict[str, Any]],
) -> None:
    state = S(row.state)
    final = next((e for e in events if e.kind is EventKind.FINAL), None)
    running = next((e for e in events if e.kind is EventKind.RUNNING), None)
    beats = [e for e in events if e.kind is EventKind.HEARTBEAT]
    first = final or running or (beats[0] if beats else None)
    if first is None:
        return
    if state is S.INSTANTIATED:
        # Submitted by a service that crashed before writing the backend's id: the report
        # proves the launch and carries the id.
        did = first.data.get("distributor_id")
        catch_up.changes.append(
            Change(
                row.id,
                context.run_id,
                S.INSTANTIATED,
                S.LAUNCHED,
                "launched (seen in its worker's report)",
                values={"distributor_id": str(did) if did else None},
            )
        )
        state = S.LAUNCHED
    if final is not None:
        if running is not None and state is S.LAUNCHED:
            final = _with_start(final, running)
        _apply_final(context, row, state, final, work, notes)
    elif running is not None and state in (S.LAUNCHED, S.NO_HEARTBEAT, S.TRIAGING):
        work.changes.append(
            Change(
                row.id,
                context.run_id,
                state,
                S.RUNNING,
                "running",
                values=_running_values(running),
                details={},
            )
        )
    elif beats and state in (S.NO_HEARTBEAT, S.TRIAGING):
        work.changes.append(
            Change(
                row.id,
                context.run_id,
                state,
                S.RUNNING,
                "heard from again",
                values={"heartbeat_at": utcnow()},
            )
        )
    elif beats and state is S.RUNNING:
        notes.append({"id": row.id, "heartbeat_at": utcnow()})


def _apply_final(
    context: RunContext,
    row: Any,
    state: InstanceState,
    final: Event,
    work: Round,
    notes: list[dict[str, Any]],
) -> None:
    data = final.data
    values = _final_values(data)
    if state.is_final or state is S.QUEUED:
        if row.maxrss is None and values.get("maxrss") is not None:
            notes.append({"id": row.id, **values})  # a late report still brings its usage
        return
    letter = str(data.get("error_state", ""))
    target = S(letter) if letter in _ENDING_LETTERS else S.UNKNOWN_ERROR
    message = str(data.get("message") or "")
    if target is S.KILL_SELF and not _kill_was_requested(context, row):
        # Stopped by someone else (an admin's scancel, a kill of the wrapper): K would say
        # the host asked for it. Deliberate, so not retried either.
        target, message = S.ERROR_FATAL, f"killed outside jobfleet: {message}"
    end(context, work, row, target, message, values, state=state)


def _kill_was_requested(context: RunContext, row: Any) -> bool:
    if row.kill_requested_at is not None:
        return True
    with context.ledger.read_session() as session:
        requested = session.scalar(select(Run.kill_requested_at).where(Run.id == context.run_id))
    return requested is not None


def _running_values(event: Event) -> dict[str, Any]:
    data = event.data
    return {
        key: data.get(key)
        for key in ("hostname", "stdout_path", "stderr_path")
        if isinstance(data.get(key), str)
    } | {"heartbeat_at": utcnow(), "started_at": datetime.fromtimestamp(event.time, UTC)}


def _with_start(final: Event, running: Event) -> Event:
    """The final report, carrying when the task started (both arrived in one round)."""
    data = {**running.data, **final.data, "started_time": running.time}
    return dataclasses.replace(final, data=data)


def _final_values(data: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    started = data.get("started_time")
    if isinstance(started, int | float):
        values["started_at"] = datetime.fromtimestamp(started, UTC)
    if isinstance(data.get("exit"), dict):
        values["exit_record"] = data["exit"]
    usage = data.get("usage")
    if isinstance(usage, dict):
        values.update(usage_values(usage))
    for key in ("hostname", "stdout_path", "stderr_path"):
        if isinstance(data.get(key), str):
            values[key] = data[key]
    return values


def usage_values(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's usage columns from a usage dict (a report's, or the backend's)."""
    values = {
        key: usage[key]
        for key in ("maxrss", "cpu", "wallclock", "usage_str")
        if usage.get(key) is not None
    }
    if "maxrss" in values:
        values["maxrss"] = int(values["maxrss"])
    return values
