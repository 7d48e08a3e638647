"""How a pod (and its Job) ended, as a `RemoteExitInfo`; why a pod is stuck in the queue.

The wrapper's own record in the termination message comes first: it is the report the host
may have missed. Otherwise the container's terminated state: `OOMKilled` is Z/oom,
`DeadlineExceeded` (pod or Job) Z/timeout, evictions, preemption and node loss U, and exit codes
go through the core's one mapping (`exit_info_from_wrapper`).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from typing import Any

from jobfleet.core.channel import FinalReport
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.wrapper import TERMINATION_LOG_STARTED, exit_info_from_wrapper
from jobfleet.plugins.kubernetes.manifests import CONTAINER

# Reasons (pod status, condition or container state) that say the node or the cluster ended
# the pod, not the task: the outcome is unknown, a retry is due.
DISRUPTIONS = {
    "evicted": ExitReason.PREEMPTED,
    "preempting": ExitReason.PREEMPTED,
    "preempted": ExitReason.PREEMPTED,
    "disruptiontarget": ExitReason.PREEMPTED,
    "terminationbykubelet": ExitReason.PREEMPTED,
    "nodelost": ExitReason.NODE_FAIL,
    "nodeshutdown": ExitReason.NODE_FAIL,
    "shutdown": ExitReason.NODE_FAIL,
    "terminated": ExitReason.NODE_FAIL,
    "unexpectedadmissionerror": ExitReason.NODE_FAIL,
    "deletionbypodgc": ExitReason.NODE_FAIL,
    "deletionbytainmanager": ExitReason.NODE_FAIL,
    "deletionbytaintmanager": ExitReason.NODE_FAIL,
}

# Container waiting reasons that will not mend by waiting: queueing errors at once.
STUCK_REASONS = frozenset(
    {"errimagepull", "imagepullbackoff", "createcontainerconfigerror", "invalidimagename"}
)


def container_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if isinstance(status, dict) and status.get("name") == CONTAINER:
            return status
    return statuses[0] if statuses and isinstance(statuses[0], dict) else {}


def terminated_state(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    state = container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return terminated if isinstance(terminated, dict) else None


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_finished(pod: Mapping[str, Any]) -> bool:
    """The pod's container ran and ended (or the pod failed as a whole): it will not change."""
    return pod_phase(pod) in ("Succeeded", "Failed")


def deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def job_failure_reason(job: Mapping[str, Any] | None) -> str:
    """The reason of a Job's Failed condition ("" when it has not failed)."""
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("reason") or "Failed")
    return ""


def exit_info_of_pod(
    pod: Mapping[str, Any], job: Mapping[str, Any] | None, distributor_id: str
) -> RemoteExitInfo:
    """The outcome of a pod that is over (`pod_finished`), or gone with a final state."""
    detail = f"pod {(pod.get('metadata') or {}).get('name', '?')} of {distributor_id}"
    terminated = terminated_state(pod) or {}
    reported = _termination_message(terminated.get("message"))
    if reported is not None:
        return reported
    status = pod.get("status") or {}
    reasons = [
        str(terminated.get("reason") or ""),
        str(status.get("reason") or ""),
        *(
            str(c.get("reason") or "")
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
    ]
    lowered = [reason.lower() for reason in reasons if reason]
    raw = next((reason for reason in reasons if reason), None)
    if "oomkilled" in lowered:
        return exit_info_from_wrapper(
            None,
            int(signal.SIGKILL),
            oom_evidence="Kubernetes reports the container OOMKilled",
            raw_state="OOMKilled",
            detail=detail,
        )
    if "deadlineexceeded" in lowered or job_failure_reason(job).lower() == "deadlineexceeded":
        return _resource_timeout(detail)
    for reason in lowered:
        if reason in DISRUPTIONS:
            return _disrupted(DISRUPTIONS[reason], raw or reason, detail)
    code = terminated.get("exitCode")
    killer = terminated.get("signal")
    if isinstance(killer, int) and killer > 0:
        return exit_info_from_wrapper(None, killer, raw_state=raw or "Signal", detail=detail)
    wrapper_died = str(terminated.get("message") or "").strip() == TERMINATION_LOG_STARTED
    if isinstance(code, int) and wrapper_died and 128 < code < 128 + 65:
        # The wrapper never wrote its record: a status above 128 is the signal that killed the
        # wrapper itself (its task's signal would have been passed on after its record).
        return exit_info_from_wrapper(None, code - 128, raw_state=raw or "Error", detail=detail)
    if isinstance(code, int):
        return exit_info_from_wrapper(code, raw_state=raw or pod_phase(pod), detail=detail)
    if pod_phase(pod) == "Failed":
        return RemoteExitInfo.unknown(
            f"the pod failed without a container exit status ({raw or 'no reason'}); {detail}"
        )
    return RemoteExitInfo.unknown(f"the pod ended without an exit status; {detail}")


def _termination_message(message: object) -> RemoteExitInfo | None:
    """The wrapper's final record, when the termination message holds one."""
    if not isinstance(message, str) or not message.startswith("{"):
        return None
    try:
        report = FinalReport.from_dict(json.loads(message))
    except Exception:  # not the wrapper's record (bad JSON, other fields): ignore it
        return None
    usage = report.usage.to_dict() if report.usage is not None else None
    text = (
        report.message or f"the wrapper's record in the termination message: {report.error_state}"
    )
    return RemoteExitInfo(report.error_state, text, record=report.exit, usage=usage)


def _resource_timeout(detail: str) -> RemoteExitInfo:
    message = f"timeout: Kubernetes ended the pod at its deadline (DeadlineExceeded); {detail}"
    record = ExitRecord(ExitReason.TIMEOUT, raw_state="DeadlineExceeded", message=message)
    return RemoteExitInfo(ErrorState.RESOURCE_ERROR, message, record=record)


def _disrupted(reason: ExitReason, raw: str, detail: str) -> RemoteExitInfo:
    message = f"{reason.value}: the cluster ended the pod ({raw}); {detail}"
    record = ExitRecord(reason, raw_state=raw, message=message)
    return RemoteExitInfo(ErrorState.UNKNOWN_ERROR, message, record=record)


def killed_info(distributor_id: str) -> RemoteExitInfo:
    message = f"cancelled: killed on the host's request ({distributor_id})"
    record = ExitRecord(ExitReason.CANCELLED, raw_state="Deleted", message=message)
    return RemoteExitInfo(ErrorState.KILL_SELF, message, record=record)


def job_ended_without_pod(job: Mapping[str, Any], distributor_id: str) -> RemoteExitInfo:
    """A Job (or index) that failed before its pod ran, or whose pod is gone unseen."""
    reason = job_failure_reason(job)
    if reason.lower() == "deadlineexceeded":
        return _resource_timeout(f"Job of {distributor_id}")
    return RemoteExitInfo.unknown(
        f"lost: the Job of {distributor_id} ended ({reason or 'no reason'}) and its pod's "
        "outcome was never seen"
    )


def queueing_error(
    pod: Mapping[str, Any], now: float, unschedulable_timeout: float, seen_since: float
) -> str | None:
    """Why a pending pod will not start by waiting, or None (`seen_since`: when the pod was
    first seen, for a condition without a transition time)."""
    if pod_phase(pod) != "Pending" or deleting(pod):
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason.lower() in STUCK_REASONS:
            return f"{reason}: {waiting.get('message') or 'the container cannot be created'}"
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and str(condition.get("reason") or "").lower() == "unschedulable"
        ):
            since = _timestamp(condition.get("lastTransitionTime")) or seen_since
            if now - since >= unschedulable_timeout:
                return f"Unschedulable: {condition.get('message') or 'no node fits the pod'}"
    return None


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
