"""The backend-independent arithmetic of packing (the Slurm tests run it for real)."""

from __future__ import annotations

import pytest

from jobfleet.core.packing import (
    ELEMENT_MARGIN,
    Member,
    array_coordinates,
    element_resources,
    members_per_element,
    split_member_id,
)


@pytest.mark.parametrize(
    ("pack", "runtime", "length", "expected"),
    [
        (None, None, 100, 1),  # not asked for
        ({"max_tasks": 50}, None, 1, 1),  # one instance: nothing to pack
        ({"max_tasks": 50}, None, 1000, 50),
        ({"max_tasks": 30}, None, 100, 25),  # evened out: 4 × 25, not 3 × 30 + 10
        ({"max_tasks": 50}, None, 7, 7),
        ({"max_tasks": 50, "max_runtime": 600}, 60, 1000, 10),  # 10 × 1m fit in 10m
        ({"max_tasks": 50, "max_runtime": 600}, 900, 1000, 1),  # not even one fits: alone
        ({"max_tasks": 50, "max_runtime": 600}, None, 1000, 50),  # no runtime to add up
    ],
)
def test_members_per_element(
    pack: dict | None, runtime: int | None, length: int, expected: int
) -> None:
    requested: dict = {"cores": 1}
    if pack is not None:
        requested["pack"] = pack
    if runtime is not None:
        requested["runtime"] = runtime
    assert members_per_element(requested, length) == expected


def test_an_element_asks_for_its_members_resources_and_their_runtimes_in_turn() -> None:
    requested = {"cores": 2, "memory": "1G", "runtime": 60, "pack": {"max_tasks": 5}, "x": 1}
    assert element_resources(requested, 5) == {
        "cores": 2,
        "memory": "1G",
        "runtime": 5 * (60 + 10 + 1) + ELEMENT_MARGIN,  # each to its limit, plus its grace
        "x": 1,
    }
    assert element_resources({"cores": 1, "pack": {"max_tasks": 5}}, 5) == {"cores": 1}
    assert element_resources({"runtime": 60}, 2, kill_grace=30)["runtime"] == 2 * 91 + 60


@pytest.mark.parametrize(
    ("distributor_id", "expected"),
    [
        ("123_4+7.0.12", Member("123_4", "7.0.12")),
        ("pod-a.b+1.2.3", Member("pod-a.b", "1.2.3")),
        ("123_4", None),
        ("123_4.batch", None),
        ("+1.2.3", None),
        ("123+1.2", None),
        ("123+1.x.3", None),
    ],
)
def test_member_ids(distributor_id: str, expected: Member | None) -> None:
    assert split_member_id(distributor_id) == expected


def test_array_coordinates_read_the_worker_node_command() -> None:
    assert array_coordinates("array --array-id 12 --batch-number 3") == (12, 3)
    assert array_coordinates("array --array-id=12 --batch-number=0") == (12, 0)
    with pytest.raises(ValueError, match="not a worker-node array command"):
        array_coordinates("job --task-instance-id 4")


# --- Packer over a real file channel, with the backend's answers given per element ---------


def make_packer(tmp_path):
    from jobfleet.core.channel import FileChannel
    from jobfleet.core.packing import Packer

    channel = FileChannel.create(tmp_path / "channel")
    return Packer(lambda: channel), channel


def submit_four(packer):
    """4 instances of array 9, 2 members per element: elements "7_0" and "7_1"."""
    return packer.submit(
        "array --array-id 9 --batch-number 0",
        {"cores": 1, "pack": {"max_tasks": 2}},
        4,
        lambda command, resources, length: {e: f"7_{e}" for e in range(length)},
    )


def test_submit_maps_each_step_to_its_member(tmp_path) -> None:
    packer, _ = make_packer(tmp_path)
    seen = []

    def elements(command, resources, length):
        seen.append((command, resources, length))
        return {e: f"7_{e}" for e in range(length)}

    steps = packer.submit(
        "array --array-id 9 --batch-number 0", {"cores": 1, "pack": {"max_tasks": 2}}, 4, elements
    )
    assert steps == {0: "7_0+9.0.0", 1: "7_0+9.0.1", 2: "7_1+9.0.2", 3: "7_1+9.0.3"}
    assert seen == [
        ("array --array-id 9 --batch-number 0 --pack 2 --array-length 4", {"cores": 1}, 2)
    ]
    assert packer.submit("array --array-id 9 --batch-number 0", {"cores": 1}, 4, elements) is None


def test_status_and_queueing_errors_follow_the_element(tmp_path) -> None:
    packer, _ = make_packer(tmp_path)
    steps = submit_four(packer)
    asked = []

    def present(ids):
        asked.append(sorted(ids))
        return {"7_1", "plain"}

    ids = [*steps.values(), "plain", "gone"]
    assert packer.submitted_or_running(ids, present) == {"7_1+9.0.2", "7_1+9.0.3", "plain"}
    assert asked == [["7_0", "7_1", "gone", "plain"]]  # one query, elements once each
    errors = packer.queueing_errors(ids, lambda jobs: {"7_0": "no node fits"})
    assert errors == {"7_0+9.0.0": "no node fits", "7_0+9.0.1": "no node fits"}


def test_a_member_kill_goes_through_the_channel_and_a_whole_element_to_the_backend(
    tmp_path,
) -> None:
    packer, channel = make_packer(tmp_path)
    steps = submit_four(packer)
    cancelled = []
    packer.terminate([steps[0]], cancelled.extend, lambda element: True)
    assert cancelled == []  # the other member of 7_0 goes on
    assert channel.member_kill_requested("9.0.0")
    assert not channel.member_kill_requested("9.0.1")
    packer.terminate([steps[2], steps[3], "plain"], cancelled.extend, lambda element: True)
    assert sorted(cancelled) == ["7_1", "plain"]  # every member of 7_1: the element goes
    assert not channel.member_kill_requested("9.0.2")
    assert packer.submitted_or_running(steps.values(), lambda ids: set(ids)) == {steps[1]}


def test_a_kill_waits_for_a_running_member_to_be_unmarked(tmp_path) -> None:
    import threading

    packer, channel = make_packer(tmp_path)
    steps = submit_four(packer)
    channel.mark_member_running("9.0.1", True)  # what the pack worker does as it starts it

    def worker() -> None:  # stops the member once asked, as pack.py's watcher does
        while not channel.member_kill_requested("9.0.1"):
            threading.Event().wait(0.01)
        channel.mark_member_running("9.0.1", False)

    thread = threading.Thread(target=worker)
    thread.start()
    packer.terminate([steps[1]], lambda ids: None, lambda element: True)
    assert not channel.member_running("9.0.1")  # terminate returned after the unmarking
    thread.join()


def test_exit_info_of_a_member_that_never_started_is_unknown(tmp_path) -> None:
    from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo

    packer, channel = make_packer(tmp_path)
    steps = submit_four(packer)
    oom = RemoteExitInfo(
        ErrorState.RESOURCE_ERROR, "ran out of memory", record=ExitRecord(ExitReason.OOM)
    )
    channel.mark_member_running("9.0.0", True)  # it ran when the element died (never unmarked)
    assert packer.exit_info(steps[0], lambda element: oom) is oom
    never = packer.exit_info(steps[1], lambda element: oom)
    assert never.error_state is ErrorState.UNKNOWN_ERROR
    assert "never started" in never.error_message
    pending = RemoteExitInfo.unknown("accounting lags", finalized=False)
    assert packer.exit_info(steps[1], lambda element: pending) is pending
