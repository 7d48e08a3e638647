import json

import pytest

from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo


def test_error_states_are_jobmon_letters():
    assert [s.value for s in ErrorState] == ["D", "E", "Z", "U", "F", "K"]
    assert ErrorState("Z") is ErrorState.RESOURCE_ERROR
    assert ErrorState.DONE == "D"


@pytest.mark.parametrize(
    ("state", "retryable", "scales"),
    [
        ("D", False, False),
        ("E", True, False),
        ("Z", True, True),
        ("U", True, False),
        ("F", False, False),
        ("K", False, False),
    ],
)
def test_retry_semantics(state, retryable, scales):
    assert ErrorState(state).retryable is retryable
    assert ErrorState(state).scales_resources is scales


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("completed", "D"),
        ("failed", "E"),
        ("oom", "Z"),
        ("timeout", "Z"),
        ("preempted", "U"),
        ("node_fail", "U"),
        ("cancelled", "K"),
        ("lost", "U"),
        ("launcher_error", "F"),
    ],
)
def test_every_reason_has_a_default_state(reason, state):
    assert ExitReason(reason).default_error_state == state


def test_remote_exit_info_unpacks_like_jobmon_pair():
    info = RemoteExitInfo("Z", "out of memory")
    state, message = info
    assert state is ErrorState.RESOURCE_ERROR
    assert message == "out of memory"
    assert info.finalized


def test_remote_exit_info_refuses_unknown_letters():
    with pytest.raises(ValueError, match="'Q'"):
        RemoteExitInfo("Q", "queued is not an outcome")


def test_unknown_helper():
    info = RemoteExitInfo.unknown("accounting lags", finalized=False)
    assert info.error_state is ErrorState.UNKNOWN_ERROR
    assert not info.finalized


def test_exit_record_round_trips_through_json():
    record = ExitRecord(
        ExitReason.OOM,
        exit_code=None,
        signal=9,
        core_dumped=False,
        raw_state="OUT_OF_MEMORY",
        message="cgroup oom_kill 1",
    )
    again = ExitRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record


def test_exit_record_unknown_exit_code_stays_unknown():
    record = ExitRecord.from_dict({"reason": "lost"})
    assert record.exit_code is None
    assert record.reason is ExitReason.LOST
