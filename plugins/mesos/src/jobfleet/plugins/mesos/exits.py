"""A Mesos task status as a `RemoteExitInfo`.

jobfleet's executor puts, in the `data` of a task's terminal update, a JSON object:
`{"record": <the wrapper's final record or null>, "returncode": <the wrapper's exit status,
negative for a signal, or null>, "started": <true when the termination log still held the
wrapper's "started" marker>}`, plus `"shutdown": true` when the task was killed because the
executor was shut down (not by a KILL). The wrapper's own record comes first; then how its process
ended, through the core's one mapping (`exit_info_from_wrapper`).

| Mesos state | error state |
|---|---|
| `TASK_FINISHED` | D, unless the record says otherwise |
| `TASK_FAILED` | the record's (Z for oom/timeout, E for exit codes, …); see below |
| `TASK_KILLED` | K when the host asked, F when someone else killed it, U when the executor |
|               | was shut down under it (`"shutdown": true`) |
| `TASK_LOST`, `TASK_GONE(_BY_OPERATOR)`, `TASK_DROPPED`, `TASK_UNREACHABLE`, … | U |
| agent `FAILURE` (its tasks) | U |
| `TASK_ERROR` | F, with the master's reason |

A `TASK_FAILED` without the wrapper's record: its exit status through the core's mapping
(`exit_info_from_wrapper`), an OOM kill (Z) when the reason is
`REASON_CONTAINER_LIMITATION_MEMORY`; without an exit status either (the agent's update for a
task whose executor died: executor `FAILURE`), U.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Mapping
from typing import Any

from jobfleet.core.channel import FinalReport
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.wrapper import exit_info_from_wrapper

ACTIVE = frozenset({"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"})
LOST = frozenset(
    {
        "TASK_LOST",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
        "TASK_DROPPED",
        "TASK_UNREACHABLE",
        "TASK_UNKNOWN",
    }
)
OOM_REASONS = frozenset({"REASON_CONTAINER_LIMITATION_MEMORY"})
"""Mesos reasons that say the container was killed for its memory (an OOM kill: Z)."""
TERMINAL = frozenset({"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR"}) | LOST


def decode_payload(data: object) -> dict[str, Any] | None:
    """The executor's payload from an update's base64 `data`, or None."""
    if not isinstance(data, str) or not data:
        return None
    try:
        payload = json.loads(base64.b64decode(data))
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def exit_info(status: Mapping[str, Any], *, killed_by_us: bool) -> RemoteExitInfo:
    """The outcome a terminal status says."""
    state = str(status.get("state") or "")
    task = str((status.get("task_id") or {}).get("value") or "?")
    reason = str(status.get("reason") or "")
    said = str(status.get("message") or "")
    detail = f"Mesos task {task}: {state}" + (f" ({reason})" if reason else "")
    if said:
        detail += f": {said}"
    payload = decode_payload(status.get("data"))
    oom = f"Mesos {reason}" if reason in OOM_REASONS else None
    if state == "TASK_KILLED" and killed_by_us:
        message = f"cancelled: killed on the host's request ({task})"
        record = ExitRecord(ExitReason.CANCELLED, raw_state=state, message=message)
        return RemoteExitInfo(ErrorState.KILL_SELF, message, record=record)
    if state == "TASK_KILLED" and payload and payload.get("shutdown"):
        message = f"lost: the jobfleet executor was shut down with the task running: {detail}"
        record = ExitRecord(ExitReason.LOST, raw_state=state, message=message)
        return RemoteExitInfo(ErrorState.UNKNOWN_ERROR, message, record=record)
    if state == "TASK_KILLED":
        message = f"cancelled by someone else: {detail}"
        record = ExitRecord(ExitReason.CANCELLED, raw_state=state, message=message)
        return RemoteExitInfo(ErrorState.ERROR_FATAL, message, record=record)
    if state in LOST:
        kind = ExitReason.NODE_FAIL if "AGENT" in reason else ExitReason.LOST
        message = f"{kind.value}: {detail}"
        record = ExitRecord(kind, raw_state=state, message=message)
        return RemoteExitInfo(ErrorState.UNKNOWN_ERROR, message, record=record)
    if state == "TASK_ERROR":
        message = f"launcher_error: Mesos refused the task: {detail}"
        record = ExitRecord(ExitReason.LAUNCHER_ERROR, raw_state=state, message=message)
        return RemoteExitInfo(ErrorState.ERROR_FATAL, message, record=record)
    reported = _record(payload)
    if reported is not None:
        return reported
    returncode = payload.get("returncode") if payload else None
    if isinstance(returncode, int):
        if payload and payload.get("started") and 128 < returncode < 128 + 65:
            # The wrapper never wrote its record: a status above 128 is the signal that killed
            # the wrapper itself.
            return exit_info_from_wrapper(
                None, returncode - 128, oom_evidence=oom, raw_state=state, detail=detail
            )
        return exit_info_from_wrapper(returncode, oom_evidence=oom, raw_state=state, detail=detail)
    if oom is not None:
        # The containerizer killed the executor's container for its memory: no exit status.
        return exit_info_from_wrapper(
            None, signal.SIGKILL, oom_evidence=oom, raw_state=state, detail=detail
        )
    if state == "TASK_FINISHED":
        return exit_info_from_wrapper(0, raw_state=state, detail=detail)
    # No exit status at all (the agent's update for a task whose executor died): U.
    return exit_info_from_wrapper(None, raw_state=state, detail=detail)


def _record(payload: Mapping[str, Any] | None) -> RemoteExitInfo | None:
    record = (payload or {}).get("record")
    if not isinstance(record, dict):
        return None
    try:
        report = FinalReport.from_dict(record)
    except Exception:  # not the wrapper's record: ignore it
        return None
    usage = report.usage.to_dict() if report.usage is not None else None
    text = report.message or f"the wrapper's record from the executor: {report.error_state}"
    return RemoteExitInfo(report.error_state, text, record=report.exit, usage=usage)


def to_dict(info: RemoteExitInfo) -> dict[str, Any]:
    """A JSON form for the journal."""
    return {
        "state": info.error_state.value,
        "message": info.error_message,
        "record": info.record.to_dict() if info.record is not None else None,
        "usage": dict(info.usage) if info.usage is not None else None,
    }


def from_dict(data: Mapping[str, Any]) -> RemoteExitInfo:
    record = data.get("record")
    return RemoteExitInfo(
        ErrorState(data["state"]),
        str(data.get("message") or ""),
        record=ExitRecord.from_dict(record) if isinstance(record, dict) else None,
        usage=data.get("usage"),
    )


def dropped_info(task: str) -> RemoteExitInfo:
    """A task killed while it waited for an offer: it never launched."""
    message = f"cancelled: killed on the host's request before it launched ({task})"
    record = ExitRecord(ExitReason.CANCELLED, raw_state="WAITING", message=message)
    return RemoteExitInfo(ErrorState.KILL_SELF, message, record=record)


def agent_lost_info(task: str, agent: str) -> RemoteExitInfo:
    message = f"node_fail: the Mesos agent {agent} was lost (FAILURE) with task {task}"
    record = ExitRecord(ExitReason.NODE_FAIL, raw_state="FAILURE", message=message)
    return RemoteExitInfo(ErrorState.UNKNOWN_ERROR, message, record=record)
