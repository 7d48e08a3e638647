"""What follows an attempt that ended without success: another attempt, and with what resources.

E and U retry as they were, W too (the backend did not take the submission), F never. Z (a
resource error) retries with the memory and/or runtime that ran out multiplied by the task's
`resource_scale`, clamped to the queue; when the queue's maximum is already reached, the first
fallback queue that allows more takes the task. All of it within the task's `max_attempts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobfleet.core.exit_info import ExitReason
from jobfleet.core.host.ledger import InstanceState
from jobfleet.core.resources import QueueLimits, ResourceRequest, format_memory, format_runtime

DEFAULT_SCALE = 1.5

# Which resources a resource error scales, by the reason the attempt ended.
_SCALED_BY_REASON: Mapping[str, tuple[str, ...]] = {
    ExitReason.OOM.value: ("memory",),
    ExitReason.TIMEOUT.value: ("runtime",),
}


@dataclass(frozen=True)
class RetryDecision:
    """Whether to try again; `resources` is the next attempt's request when it differs."""

    retry: bool
    message: str
    resources: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)


def decide_retry(
    state: InstanceState,
    *,
    attempt: int,
    max_attempts: int,
    resources: Mapping[str, Any],
    reason: str | None,
    queue_limits: Mapping[str, QueueLimits],
    scale: float = DEFAULT_SCALE,
    fallback_queues: Sequence[str] = (),
    maxrss: int | None = None,
) -> RetryDecision:
    """Decide what follows an instance that ended in `state` (a letter that ends an attempt).

    `resources` is the request the ended attempt ran with (coerced to its queue, which it
    names); `queue_limits` has the limits of that queue and of every fallback queue.
    """
    if state is InstanceState.ERROR_FATAL:
        return RetryDecision(False, "a fatal error: no retry can help")
    if state is InstanceState.KILL_SELF or state is InstanceState.DONE:
        return RetryDecision(False, f"ended {state.name}")
    if attempt >= max_attempts:
        return RetryDecision(False, f"used all {max_attempts} attempts")
    if state is not InstanceState.RESOURCE_ERROR:
        return RetryDecision(True, f"attempt {attempt + 1} of {max_attempts}, as before")
    return _scaled_retry(
        resources, reason, queue_limits, scale, fallback_queues, maxrss, attempt, max_attempts
    )


def _scaled_retry(
    resources: Mapping[str, Any],
    reason: str | None,
    queue_limits: Mapping[str, QueueLimits],
    scale: float,
    fallback_queues: Sequence[str],
    maxrss: int | None,
    attempt: int,
    max_attempts: int,
) -> RetryDecision:
    request = ResourceRequest.parse(resources)
    queue = request.queue or ""
    wanted = _scaled_values(request, reason, scale, maxrss)
    if not wanted:
        return RetryDecision(
            True, f"a resource error with nothing to scale; attempt {attempt + 1}, as before"
        )
    for candidate in (queue, *[name for name in fallback_queues if name != queue]):
        limits = queue_limits.get(candidate)
        if limits is None:
            continue
        granted = _clamped(wanted, limits)
        if any(granted[name] > (_current(request, name) or 0) for name in granted):
            return _decision(request, candidate, granted, attempt, max_attempts)
    shown = ", ".join(f"{name} {_show(name, _current(request, name))}" for name in wanted)
    return RetryDecision(
        False,
        f"a resource error at {shown}, which neither queue {queue!r} nor a fallback queue "
        "allows to grow",
    )


def _scaled_values(
    request: ResourceRequest, reason: str | None, scale: float, maxrss: int | None
) -> dict[str, int]:
    names = _SCALED_BY_REASON.get(reason or "", ("memory", "runtime"))
    wanted: dict[str, int] = {}
    for name in names:
        current = _current(request, name)
        if current is None and name == "memory" and maxrss:
            current = maxrss  # no limit was asked for, yet memory ran out: start from the peak
        if current is not None:
            wanted[name] = math.ceil(current * scale)
    return wanted


def _current(request: ResourceRequest, name: str) -> int | None:
    value = request.memory if name == "memory" else request.runtime
    return None if value is None else int(value)


def _clamped(wanted: Mapping[str, int], limits: QueueLimits) -> dict[str, int]:
    granted = {}
    for name, value in wanted.items():
        maximum = limits.max_memory if name == "memory" else limits.max_runtime
        granted[name] = value if maximum is None else min(value, int(maximum))
    return granted


def _decision(
    request: ResourceRequest,
    queue: str,
    granted: Mapping[str, int],
    attempt: int,
    max_attempts: int,
) -> RetryDecision:
    text = ", ".join(
        f"{name} {_show(name, _current(request, name))} → {_show(name, value)}"
        for name, value in granted.items()
    )
    changes: list[dict[str, Any]] = [
        {"field": name, "from": _current(request, name), "to": value}
        for name, value in granted.items()
    ]
    values: dict[str, Any] = {"queue": queue, **granted}
    new_request = ResourceRequest.parse({**request.to_dict(), **values}, bare_memory_unit="B")
    moved = f" on fallback queue {queue!r}" if queue != request.queue else ""
    if moved:
        changes.append({"field": "queue", "from": request.queue, "to": queue})
    return RetryDecision(
        True,
        f"attempt {attempt + 1} of {max_attempts} with {text}{moved}",
        new_request.to_dict(),
        changes,
    )


def _show(name: str, value: int | None) -> str:
    if value is None:
        return "none"
    return format_memory(value) if name == "memory" else format_runtime(value)
