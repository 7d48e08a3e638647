"""The Mesos status → error state mapping (exits.py), for every state issue 13 names."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jobfleet.core.channel import FinalReport
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord
from jobfleet.core.wrapper import NOT_FOUND, WRAPPER_FAILED, exit_info_from_wrapper
from jobfleet.plugins.mesos import exits

D, E, Z, U, F, K = (
    ErrorState.DONE,
    ErrorState.ERROR_RECOVERABLE,
    ErrorState.RESOURCE_ERROR,
    ErrorState.UNKNOWN_ERROR,
    ErrorState.ERROR_FATAL,
    ErrorState.KILL_SELF,
)


def record(state: ErrorState, reason: ExitReason, **exit: Any) -> dict[str, Any]:
    """A wrapper's final record as the termination log holds it."""
    report = FinalReport(
        error_state=state,
        message=f"the wrapper says {state.value}",
        exit=ExitRecord(reason, **exit),
    )
    return report.to_dict()


def data(**payload: Any) -> str:
    """The executor's payload, as `data` of a terminal update."""
    full = {"record": None, "returncode": None, "started": False, **payload}
    return base64.b64encode(json.dumps(full).encode()).decode()


def update(state: str, *, reason: str = "", message: str = "", **payload: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"task_id": {"value": "jf-0123456789-0123456789"}, "state": state}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if payload:
        status["data"] = data(**payload)
    return status


CASES = [
    # TASK_FINISHED: D unless the record says otherwise.
    ("finished, no data", update("TASK_FINISHED"), False, D, ExitReason.COMPLETED),
    ("finished, exit 0", update("TASK_FINISHED", returncode=0), False, D, ExitReason.COMPLETED),
    (
        "finished, the record says D",
        update("TASK_FINISHED", returncode=0, record=record(D, ExitReason.COMPLETED, exit_code=0)),
        False,
        D,
        ExitReason.COMPLETED,
    ),
    (
        "finished, the record says E",
        update("TASK_FINISHED", returncode=0, record=record(E, ExitReason.FAILED, exit_code=3)),
        False,
        E,
        ExitReason.FAILED,
    ),
    # TASK_FAILED: the record's state.
    (
        "failed, the record says Z (oom)",
        update("TASK_FAILED", returncode=1, record=record(Z, ExitReason.OOM, signal=9)),
        False,
        Z,
        ExitReason.OOM,
    ),
    (
        "failed, the record says Z (runtime limit)",
        update("TASK_FAILED", returncode=1, record=record(Z, ExitReason.TIMEOUT)),
        False,
        Z,
        ExitReason.TIMEOUT,
    ),
    (
        "failed, the record says E (exit code)",
        update("TASK_FAILED", returncode=1, record=record(E, ExitReason.FAILED, exit_code=3)),
        False,
        E,
        ExitReason.FAILED,
    ),
    (
        "failed, the record says F (launcher error)",
        update("TASK_FAILED", returncode=1, record=record(F, ExitReason.LAUNCHER_ERROR)),
        False,
        F,
        ExitReason.LAUNCHER_ERROR,
    ),
    # TASK_FAILED without a record: the wrapper's exit status through the core's mapping.
    ("failed, exit 3, no record", update("TASK_FAILED", returncode=3), False, E, ExitReason.FAILED),
    (
        "failed, wrapper exit 127 (not found)",
        update("TASK_FAILED", returncode=NOT_FOUND),
        False,
        F,
        ExitReason.LAUNCHER_ERROR,
    ),
    (
        "failed, the wrapper failed before reporting",
        update("TASK_FAILED", returncode=WRAPPER_FAILED),
        False,
        U,
        ExitReason.LOST,
    ),
    (
        "failed, the wrapper SIGKILLed (128+9) while started",
        update("TASK_FAILED", returncode=137, started=True),
        False,
        U,
        ExitReason.LOST,
    ),
    (
        "failed, the wrapper SIGKILLed, memory limitation",
        update("TASK_FAILED", reason="REASON_CONTAINER_LIMITATION_MEMORY", returncode=-9),
        False,
        Z,
        ExitReason.OOM,
    ),
    (
        "failed, memory limitation, no data (the agent's update)",
        update("TASK_FAILED", reason="REASON_CONTAINER_LIMITATION_MEMORY"),
        False,
        Z,
        ExitReason.OOM,
    ),
    # The executor died (its FAILURE): the agent fails its tasks without data.
    (
        "failed, executor terminated (agent's update, executor FAILURE)",
        update("TASK_FAILED", reason="REASON_EXECUTOR_TERMINATED", message="Executor terminated"),
        False,
        U,
        ExitReason.LOST,
    ),
    # TASK_KILLED: K when we asked, F when someone else did, U when the executor was shut down.
    ("killed, we asked", update("TASK_KILLED", returncode=-15), True, K, ExitReason.CANCELLED),
    ("killed, we asked, no data", update("TASK_KILLED"), True, K, ExitReason.CANCELLED),
    (
        "killed by someone else",
        update("TASK_KILLED", returncode=-15),
        False,
        F,
        ExitReason.CANCELLED,
    ),
    (
        "killed by someone else, the record says done",
        update("TASK_KILLED", returncode=0, record=record(D, ExitReason.COMPLETED, exit_code=0)),
        False,
        F,
        ExitReason.CANCELLED,
    ),
    (
        "killed by the framework's removal (master's update)",
        update("TASK_KILLED", reason="REASON_FRAMEWORK_REMOVED"),
        False,
        F,
        ExitReason.CANCELLED,
    ),
    (
        "killed: executor shut down under it",
        update("TASK_KILLED", returncode=-15, shutdown=True),
        False,
        U,
        ExitReason.LOST,
    ),
    (
        "killed: we asked, then the executor was shut down",
        update("TASK_KILLED", returncode=-15, shutdown=True),
        True,
        K,
        ExitReason.CANCELLED,
    ),
    # Lost in every way Mesos says it: U.
    *[
        (
            f"{state.lower()}",
            update(state, reason="REASON_RECONCILIATION"),
            killed,
            U,
            ExitReason.LOST,
        )
        for state in sorted(exits.LOST)
        for killed in (False, True)
    ],
    (
        "lost with its agent",
        update("TASK_LOST", reason="REASON_AGENT_REMOVED"),
        False,
        U,
        ExitReason.NODE_FAIL,
    ),
    (
        "unreachable agent",
        update("TASK_UNREACHABLE", reason="REASON_AGENT_UNREACHABLE"),
        False,
        U,
        ExitReason.NODE_FAIL,
    ),
    (
        "gone with its agent",
        update("TASK_GONE", reason="REASON_AGENT_REMOVED"),
        False,
        U,
        ExitReason.NODE_FAIL,
    ),
    (
        "dropped (invalid offers)",
        update("TASK_DROPPED", reason="REASON_INVALID_OFFERS"),
        False,
        U,
        ExitReason.LOST,
    ),
    # TASK_ERROR: F with the reason.
    (
        "error (bad task description)",
        update("TASK_ERROR", reason="REASON_TASK_INVALID", message="Task uses no resources"),
        False,
        F,
        ExitReason.LAUNCHER_ERROR,
    ),
]


@pytest.mark.parametrize(
    ("status", "killed_by_us", "state", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_terminal_states_map_to_error_states(
    status: dict[str, Any], killed_by_us: bool, state: ErrorState, reason: ExitReason
) -> None:
    assert status["state"] in exits.TERMINAL
    info = exits.exit_info(status, killed_by_us=killed_by_us)
    assert info.error_state is state, info.error_message
    assert info.finalized
    assert info.record is not None
    assert info.record.reason is reason, info.record
    # The journal keeps the same outcome.
    assert exits.from_dict(exits.to_dict(info)).error_state is state


def test_every_state_the_issue_names_is_terminal_and_active_ones_are_not() -> None:
    named = {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_LOST",
        "TASK_GONE",
        "TASK_DROPPED",
        "TASK_UNREACHABLE",
        "TASK_ERROR",
    }
    assert named <= exits.TERMINAL
    assert not exits.ACTIVE & exits.TERMINAL
    covered = {case[1]["state"] for case in CASES}
    assert covered >= exits.TERMINAL


def test_exit_codes_go_through_the_cores_one_mapping() -> None:
    for code in (1, 2, 3, 42, 126, NOT_FOUND, 130, 137, WRAPPER_FAILED, 241):
        info = exits.exit_info(update("TASK_FAILED", returncode=code), killed_by_us=False)
        expected = exit_info_from_wrapper(code)
        assert info.error_state is expected.error_state, code
        assert info.record is not None
        assert expected.record is not None
        assert info.record.reason is expected.record.reason, code
        assert info.record.exit_code == expected.record.exit_code


def test_task_error_keeps_the_masters_reason_and_message() -> None:
    status = update(
        "TASK_ERROR",
        reason="REASON_TASK_INVALID",
        message="ExecutorInfo is not compatible with the running executor 'jobfleet'",
    )
    info = exits.exit_info(status, killed_by_us=False)
    assert info.error_state is F
    assert "REASON_TASK_INVALID" in info.error_message
    assert "not compatible with the running executor" in info.error_message
    assert info.record is not None
    assert info.record.raw_state == "TASK_ERROR"


def test_a_killed_task_says_who_killed_it() -> None:
    ours = exits.exit_info(update("TASK_KILLED"), killed_by_us=True)
    theirs = exits.exit_info(update("TASK_KILLED", message="drained"), killed_by_us=False)
    assert "host's request" in ours.error_message
    assert "someone else" in theirs.error_message
    assert "drained" in theirs.error_message


def test_agent_failure_is_unknown() -> None:
    info = exits.agent_lost_info("jf-0123456789-0123456789", "agent-S1")
    assert info.error_state is U
    assert info.record is not None
    assert info.record.reason is ExitReason.NODE_FAIL
    assert "agent-S1" in info.error_message


def test_a_record_that_is_not_the_wrappers_is_ignored() -> None:
    status = update("TASK_FAILED", returncode=3, record={"error_state": "nonsense"})
    info = exits.exit_info(status, killed_by_us=False)
    assert info.error_state is E
    bad = dict(update("TASK_FINISHED"), data="not base64 json")
    assert exits.exit_info(bad, killed_by_us=False).error_state is D
