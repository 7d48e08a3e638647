"""What follows an attempt that ended without success (retry.decide_retry)."""

from __future__ import annotations

from typing import Any

import pytest

from jobfleet.core.host.ledger import InstanceState
from jobfleet.core.host.retry import decide_retry
from jobfleet.core.resources import QueueLimits

S = InstanceState
LIMITS = {
    "small": QueueLimits(max_memory=4 * 2**30, max_runtime=3600),
    "big": QueueLimits(max_memory=64 * 2**30, max_runtime=86400),
}


def decide(state: InstanceState, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "attempt": 1,
        "max_attempts": 3,
        "resources": {"memory": "2G", "runtime": 600, "queue": "small"},
        "reason": "oom",
        "queue_limits": LIMITS,
    }
    arguments.update(overrides)
    return decide_retry(state, **arguments)


@pytest.mark.parametrize("state", [S.ERROR_RECOVERABLE, S.UNKNOWN_ERROR, S.NO_DISTRIBUTOR_ID])
def test_plain_retries_keep_the_request(state: InstanceState) -> None:
    decision = decide(state)
    assert decision.retry
    assert decision.resources is None
    assert "attempt 2 of 3" in decision.message


@pytest.mark.parametrize("state", [S.ERROR_FATAL, S.KILL_SELF, S.DONE])
def test_no_retry_after_fatal_kill_or_done(state: InstanceState) -> None:
    assert not decide(state).retry


def test_attempts_are_bounded() -> None:
    decision = decide(S.ERROR_RECOVERABLE, attempt=3)
    assert not decision.retry
    assert "used all 3 attempts" in decision.message


def test_out_of_memory_scales_memory_only() -> None:
    decision = decide(S.RESOURCE_ERROR)
    assert decision.retry
    assert decision.resources == {"memory": "3G", "runtime": 600, "queue": "small"}
    assert decision.changes == [{"field": "memory", "from": 2 * 2**30, "to": 3 * 2**30}]


def test_timeout_scales_runtime_with_the_tasks_own_factor() -> None:
    decision = decide(S.RESOURCE_ERROR, reason="timeout", scale=2.0)
    assert decision.resources == {"memory": "2G", "runtime": 1200, "queue": "small"}


def test_an_unknown_resource_error_scales_both() -> None:
    decision = decide(S.RESOURCE_ERROR, reason=None)
    assert decision.resources is not None
    assert decision.resources["memory"] == "3G"
    assert decision.resources["runtime"] == 900


def test_scaling_is_clamped_to_the_queue() -> None:
    decision = decide(S.RESOURCE_ERROR, resources={"memory": "3G", "queue": "small"})
    assert decision.resources == {"memory": "4G", "queue": "small"}


def test_at_the_queue_maximum_a_fallback_queue_takes_over() -> None:
    decision = decide(
        S.RESOURCE_ERROR, resources={"memory": "4G", "queue": "small"}, fallback_queues=["big"]
    )
    assert decision.resources == {"memory": "6G", "queue": "big"}
    assert "fallback queue 'big'" in decision.message
    assert {"field": "queue", "from": "small", "to": "big"} in decision.changes


def test_at_the_maximum_without_a_fallback_the_task_is_over() -> None:
    decision = decide(S.RESOURCE_ERROR, resources={"memory": "4G", "queue": "small"})
    assert not decision.retry
    assert "neither queue 'small' nor a fallback queue" in decision.message


def test_no_memory_request_scales_from_the_measured_peak() -> None:
    decision = decide(S.RESOURCE_ERROR, resources={"queue": "small"}, maxrss=2**30)
    assert decision.resources == {"memory": "1536M", "queue": "small"}


def test_nothing_to_scale_is_a_plain_retry() -> None:
    decision = decide(S.RESOURCE_ERROR, resources={"queue": "small"}, reason="timeout")
    assert decision.retry
    assert decision.resources is None
