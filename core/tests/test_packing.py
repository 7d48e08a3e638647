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
        "runtime": 5 * 60 + ELEMENT_MARGIN,
        "x": 1,
    }
    assert element_resources({"cores": 1, "pack": {"max_tasks": 5}}, 5) == {"cores": 1}


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
