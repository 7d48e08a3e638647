"""Ingesting the worker reports that arrived on the channel: running, heartbeats, final reports.

Reports are applied by compare-and-set, so reading a report twice (after a crash, from an
older cursor) changes nothing. The cursor is saved in the same transaction as the changes.

The channel has already checked every report against its dataclass (`RunningReport`,
`HeartbeatReport`, `FinalReport`): a malformed one never gets here, it is a problem on the
cursor, logged below.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobfleet.core.channel import (
    Event,
    EventCursor,
    EventKind,
    FinalReport,
    RunningReport,
    UsageReport,
)
from jobfleet.core.errors import ChannelError
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
    events = _of_this_run(context, events)
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
        ended: list[int] = []
        for instance_id, instance_events in by_instance.items():
            row = rows.get(instance_id)
            if row is None or row.run_id != context.run_id:
                continue  # not ours (a channel shared by mistake): never touch it
            _apply_reports(context, row, instance_events, catch_up, work, notes)
            if any(event.kind is EventKind.FINAL for event in instance_events):
                ended.append(instance_id)
        apply_changes(session, catch_up.changes)
        commit(context, session, work)
        _write_notes(session, notes)
        _save_cursor(context, session, cursor)
    context.cursor = cursor
    _forget_events(context, ended)
    return True


def _forget_events(context: RunContext, ended: list[int]) -> None:
    """Drop the events files of instances whose final report is now in the ledger, so that the
    channel and the cursor (saved every round) stay the size of the live instances, not of the
    run's history. A failure costs only space: the files are read as before."""
    if not ended:
        return
    try:
        context.started_channel().forget_events(ended)
    except ChannelError as exc:
        log.warning("run %s: %s", context.run_id, exc)


def _of_this_run(context: RunContext, events: Sequence[Event]) -> list[Event]:
    """The events that carry the run's token; the others are logged as problems, never read.

    A report of another run (another ledger's run of the same number, a wrapper of an older
    run left in a reused directory) would otherwise be taken for one of this run's instances,
    which have the same ids.
    """
    ours = []
    for event in events:
        if event.run_token == context.run_token:
            ours.append(event)
            continue
        log.warning(
            "run %s: ignored a %s report of task instance %s (writer %s): it carries %s, "
            "not this run's token",
            context.run_id,
            event.kind.value,
            event.task_instance_id,
            event.writer,
            "no run token" if event.run_token is None else f"the run token {event.run_token!r}",
        )
    return ours


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
        catch_up.changes.append(
            Change(
                row.id,
                context.run_id,
                S.INSTANTIATED,
                S.LAUNCHED,
                "launched (seen in its worker's report)",
                values={"distributor_id": _distributor_id(first)},
            )
        )
        state = S.LAUNCHED
    if final is not None:
        # A running report of the same round says when and where the task started.
        started = running if state is S.LAUNCHED else None
        _apply_final(context, row, state, final, started, work, notes)
    elif running is not None and state in (S.LAUNCHED, S.NO_HEARTBEAT, S.TRIAGING):
        work.changes.append(_to_running(context, row, state, "running", _running_values(running)))
    elif beats and state in (S.NO_HEARTBEAT, S.TRIAGING):
        values = {"heartbeat_at": utcnow()}
        work.changes.append(_to_running(context, row, state, "heard from again", values))
    elif beats and state is S.RUNNING:
        notes.append({"id": row.id, "heartbeat_at": utcnow()})


def _to_running(
    context: RunContext, row: Any, state: InstanceState, message: str, values: dict[str, Any]
) -> Change:
    return Change(row.id, context.run_id, state, S.RUNNING, message, values=values)


def _apply_final(
    context: RunContext,
    row: Any,
    state: InstanceState,
    final: Event,
    running: Event | None,
    work: Round,
    notes: list[dict[str, Any]],
) -> None:
    report = final.report
    if not isinstance(report, FinalReport):
        return  # never: the channel reads a final event's data as a FinalReport
    values = _final_values(report, running)
    if state.is_final or state is S.QUEUED:
        if row.maxrss is None and values.get("maxrss") is not None:
            notes.append({"id": row.id, **values})  # a late report still brings its usage
        return
    letter = report.error_state.value
    target = S(letter) if letter in _ENDING_LETTERS else S.UNKNOWN_ERROR
    message = report.message
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


def _distributor_id(event: Event) -> str | None:
    """The backend's id a running or final report carries (a heartbeat carries none)."""
    report = event.report
    if isinstance(report, RunningReport | FinalReport):
        return report.distributor_id or None
    return None


def _where(report: RunningReport | FinalReport) -> dict[str, str]:
    """The node and log files a report names, leaving out those it does not."""
    named = {
        "hostname": report.hostname,
        "stdout_path": report.stdout_path,
        "stderr_path": report.stderr_path,
    }
    return {key: value for key, value in named.items() if value is not None}


def _running_values(event: Event) -> dict[str, Any]:
    values: dict[str, Any] = {
        "heartbeat_at": utcnow(),
        "started_at": datetime.fromtimestamp(event.time, UTC),
    }
    if isinstance(event.report, RunningReport):
        values |= _where(event.report)
    return values


def _final_values(final: FinalReport, running: Event | None = None) -> dict[str, Any]:
    """The ledger columns a final report fills; `running` (same round) adds when and where the
    task started."""
    values: dict[str, Any] = {}
    if running is not None:
        values["started_at"] = datetime.fromtimestamp(running.time, UTC)
        if isinstance(running.report, RunningReport):
            values |= _where(running.report)
    if final.exit is not None:
        values["exit_record"] = final.exit.to_dict()
    return values | usage_values(final.usage) | _where(final)


def usage_values(usage: UsageReport | None) -> dict[str, Any]:
    """The usage columns (maxrss, cpu, wallclock, usage_str) of what was measured."""
    if usage is None:
        return {}
    return {key: value for key, value in usage.to_dict().items() if value is not None}


def backend_usage_values(context: RunContext, instance_id: int, usage: Any) -> dict[str, Any]:
    """The usage columns from a backend's accounting (`RemoteExitInfo.usage`), checked as a
    report's are: a backend's unusable numbers are logged and left out, never stored."""
    try:
        return usage_values(UsageReport.from_dict(usage or {}))
    except ChannelError as exc:
        log.warning(
            "run %s: the backend's usage of instance %s is unusable: %s",
            context.run_id,
            instance_id,
            exc,
        )
        return {}
