"""The message and exit classes behave as the frozen dataclasses they replaced."""

from __future__ import annotations

import copy
import pickle

import pytest

from jobfleet.core.channel import Event, EventCursor, EventKind, FinalReport, TaskSpec
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.frozen import FrozenInstanceError


def test_positional_and_keyword_construction_agree_with_defaults() -> None:
    by_position = TaskSpec(3, "true", "t")
    by_keyword = TaskSpec(task_instance_id=3, command="true", name="t")
    assert by_position == by_keyword
    assert by_position.environment == {}
    assert by_position.heartbeat_interval == 30.0
    assert ExitRecord(ExitReason.FAILED, 1) == ExitRecord(reason=ExitReason.FAILED, exit_code=1)


def test_equality_compares_every_field_and_the_class() -> None:
    record = ExitRecord(ExitReason.FAILED, exit_code=1)
    assert record != ExitRecord(ExitReason.FAILED, exit_code=2)
    assert record != RemoteExitInfo(ErrorState.DONE, "")
    assert TaskSpec(1, "a", "n", environment={"A": "1"}) != TaskSpec(1, "a", "n")


def test_hash_follows_equality_and_skips_mappings() -> None:
    spec = TaskSpec(1, "a", "n", environment={"A": "1"})
    assert hash(spec) == hash(TaskSpec(1, "a", "n", environment={"A": "1"}))
    assert len({ExitRecord(ExitReason.OOM), ExitRecord(ExitReason.OOM)}) == 1
    info = RemoteExitInfo("D", "fine", usage={"maxrss": 1})
    assert hash(info) == hash(RemoteExitInfo("D", "fine", usage={"maxrss": 2}))


def test_fields_cannot_be_assigned_or_deleted() -> None:
    record = ExitRecord(ExitReason.COMPLETED, 0)
    with pytest.raises(FrozenInstanceError, match="exit_code"):
        record.exit_code = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del record.message  # type: ignore[misc]
    with pytest.raises(AttributeError):
        record.extra = 1  # type: ignore[attr-defined]
    assert record.exit_code == 0


def test_repr_names_each_field_like_a_dataclass() -> None:
    assert repr(ExitRecord(ExitReason.OOM, signal=9)) == (
        "ExitRecord(reason=<ExitReason.OOM: 'oom'>, exit_code=None, signal=9, "
        "core_dumped=False, raw_state=None, message='')"
    )
    event = Event(EventKind.HEARTBEAT, 1, "w", 0, 1.0, {"rss": 5})
    _ = event.report  # the cached report is neither shown nor compared
    assert "_report" not in repr(event)
    assert event == Event(EventKind.HEARTBEAT, 1, "w", 0, 1.0, {"rss": 5})


def test_replace_checks_the_new_values_and_keeps_the_rest() -> None:
    info = RemoteExitInfo(ErrorState.DONE, "fine")
    changed = info.replace(usage={"cpu": 1.0}, error_state="E")
    assert changed == RemoteExitInfo(ErrorState.ERROR_RECOVERABLE, "fine", usage={"cpu": 1.0})
    assert info.usage is None
    cursor = EventCursor("file", {"a": 1}, ("skipped",))
    assert cursor.replace(problems=()) == EventCursor("file", {"a": 1})
    with pytest.raises(TypeError, match="no field 'nope'"):
        cursor.replace(nope=1)
    with pytest.raises(Exception, match="error_state"):
        FinalReport("D").replace(error_state="nonsense")


def test_copies_and_pickles_are_equal_and_still_frozen() -> None:
    record = ExitRecord(ExitReason.FAILED, 3, message="boom")
    values = [
        record,
        RemoteExitInfo(ErrorState.DONE, "fine", record=record, usage={"cpu": 1.0}),
        FinalReport("E", "failed", exit=record, usage={"maxrss": 5}),
        Event(EventKind.FINAL, 1, "w", 2, 3.0, {"error_state": "D"}, "run-1"),
    ]
    for value in values:
        for twin in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):  # noqa: S301 - our own bytes
            assert twin == value
            assert twin is not value
            with pytest.raises(FrozenInstanceError):
                twin.message = "changed"  # type: ignore[misc, union-attr]
    event = pickle.loads(pickle.dumps(values[-1]))  # noqa: S301 - our own bytes
    assert event.report == FinalReport("D")
