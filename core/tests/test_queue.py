"""BaseClusterQueue, CoercedResources, and the queue conformance kit run against them."""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from jobfleet.core.cluster_protocol import ClusterQueue, protocol_problems
from jobfleet.core.errors import ResourceError
from jobfleet.core.queue import BaseClusterQueue, CoercedResources
from jobfleet.core.resources import (
    CLAMPED_TO_MAXIMUM,
    FILLED_FROM_DEFAULT,
    GIB,
    Adjustment,
    QueueLimits,
    ResourceRequest,
)
from jobfleet.core.testing.queue import QueueTests

pytest_plugins = ["pytester"]

PARAMETERS: dict[str, Any] = {
    "max_cores": 8,
    "max_memory": "64G",
    "max_runtime": "1d",
    "max_gpus": 2,
    "default_cores": 1,
    "default_memory": "1G",
    "default_runtime": "1h",
    "partition": "batch",  # the backend's own key
}


@pytest.fixture
def queue() -> BaseClusterQueue:
    return BaseClusterQueue(7, "all.q", dict(PARAMETERS))


class GibQueue(BaseClusterQueue):
    """A queue for a Jobmon host, which sends memory as integer GiB."""

    bare_memory_unit = "G"


class AccountQueue(BaseClusterQueue):
    """A backend that needs an account, and knows its GPU types."""

    @property
    def required_resources(self) -> list[str]:
        return ["account", "memory"]

    def backend_problems(self, request: ResourceRequest) -> list[str]:
        if request.gpu_type not in (None, "a100"):
            return [f"The queue has no GPUs of type {request.gpu_type!r}; it has a100 only."]
        return []


class AliasQueue(BaseClusterQueue):
    """A backend that also reads Jobmon's old key `num_cores`."""

    def parse_request(self, resources: Mapping[str, Any]) -> ResourceRequest:
        renamed = dict(resources)
        if "num_cores" in renamed:
            renamed["cores"] = renamed.pop("num_cores")
        return super().parse_request(renamed)


# --- construction --------------------------------------------------------------------------


def test_fits_the_protocol() -> None:
    assert protocol_problems(BaseClusterQueue, ClusterQueue) == []
    assert protocol_problems(GibQueue, ClusterQueue) == []


def test_properties(queue: BaseClusterQueue) -> None:
    assert queue.queue_id == 7
    assert queue.queue_name == "all.q"
    assert queue.parameters == PARAMETERS
    assert queue.required_resources == []
    assert queue.limits == QueueLimits.from_parameters(PARAMETERS)
    assert repr(queue) == "BaseClusterQueue(7, 'all.q')"


def test_parameters_are_a_copy() -> None:
    parameters = {"max_memory": "4G"}
    queue = BaseClusterQueue(1, "q", parameters)
    parameters["max_memory"] = "8G"
    assert queue.parameters == {"max_memory": "4G"}
    assert queue.limits.max_memory == 4 * GIB


def test_required_resources_from_parameters() -> None:
    queue = BaseClusterQueue(1, "q", {"required_resources": ["memory", "runtime"]})
    assert queue.required_resources == ["memory", "runtime"]
    queue.required_resources.append("cores")  # a copy: the queue is unchanged
    assert queue.required_resources == ["memory", "runtime"]


@pytest.mark.parametrize("value", ["memory", [1], ["memory", ""], 5, {"memory": 1}])
def test_bad_required_resources(value: object) -> None:
    with pytest.raises(ResourceError) as caught:
        BaseClusterQueue(1, "q", {"required_resources": value})
    assert caught.value.field == "required_resources"


@pytest.mark.parametrize(
    ("parameters", "key"),
    [
        ({"max_memory": 64}, "max_memory"),  # bare: ambiguous
        ({"max_runtime": "forever"}, "max_runtime"),
        ({"max_memory": "4G", "default_memory": "8G"}, "default_memory"),
    ],
)
def test_bad_parameter_raises_at_construction(parameters: dict[str, Any], key: str) -> None:
    with pytest.raises(ResourceError) as caught:
        BaseClusterQueue(1, "q", parameters)
    assert caught.value.field == key


def test_bare_memory_unit_reads_parameters_and_requests() -> None:
    queue = GibQueue(1, "q", {"max_memory": 64})
    assert queue.limits.max_memory == 64 * GIB
    assert queue.validate_resources(strict=True, memory=4) == (True, "")
    # A host that speaks GiB gets GiB back, so it can scale and store the number as it does.
    assert queue.coerce_resources(memory=100)["memory"] == 64
    assert queue.coerce_resources(memory="1536M")["memory"] == 1.5


# --- validate_resources --------------------------------------------------------------------


def test_fitting_request_is_valid(queue: BaseClusterQueue) -> None:
    request: dict[str, Any] = {"cores": 2, "memory": "4G", "runtime": "2h", "gpus": "a100:1"}
    request["account"] = "x"
    assert queue.validate_resources(strict=True, **request) == (True, "")
    assert queue.validate_resources(**request) == (True, "")


def test_strict_may_be_positional(queue: BaseClusterQueue) -> None:
    assert not queue.validate_resources(True, memory="128G")[0]
    assert queue.validate_resources(False, memory="128G")[0]


@pytest.mark.parametrize(
    ("key", "value", "clause"),
    [
        ("memory", "128G", "memory 128G is above the queue maximum of 64G"),
        ("cores", 16, "cores 16 is above the queue maximum of 8"),
        ("runtime", "2d", "runtime 2d is above the queue maximum of 1d"),
        ("gpus", 3, "gpus 3 is above the queue maximum of 2"),
    ],
)
def test_over_a_limit(queue: BaseClusterQueue, key: str, value: Any, clause: str) -> None:
    ok, message = queue.validate_resources(strict=True, **{key: value})
    assert (ok, message) == (False, f"The request does not fit the queue: {clause}.")
    ok, message = queue.validate_resources(strict=False, **{key: value})
    assert ok
    assert message.startswith(f"The request will be coerced to fit the queue: {clause}, so ")


GARBAGE: tuple[object, ...] = (
    "lots",
    -1,
    math.nan,
    math.inf,
    True,
    [1],
    {"a": 1},
    b"1",
    "",
    "--5",
    "1:2:3:4",
)
UNREADABLE: list[tuple[str, object]] = [
    *((key, value) for key in ("cores", "memory", "runtime", "gpus") for value in GARBAGE),
    ("memory", 4),
    ("gpu_type", 5),
    ("queue", ""),
    ("gpus", "x:y:1"),
]


@pytest.mark.parametrize(("key", "value"), UNREADABLE, ids=repr)
@pytest.mark.parametrize("strict", [True, False])
def test_unreadable_value_is_invalid_and_never_raises(
    queue: BaseClusterQueue, key: str, value: object, strict: bool
) -> None:
    ok, message = queue.validate_resources(strict=strict, **{key: value})
    assert not ok
    assert message.startswith(f"Resource {key!r}: ")
    assert "Accepted: " in message


@pytest.mark.parametrize("strict", [True, False])
def test_missing_required_resource_without_default(strict: bool) -> None:
    queue = BaseClusterQueue(1, "q", {"required_resources": ["runtime", "account"]})
    ok, message = queue.validate_resources(strict=strict, memory="1G")
    assert not ok
    assert "no value for runtime, account" in message


def test_required_resource_with_a_default(queue: BaseClusterQueue) -> None:
    queue = BaseClusterQueue(1, "q", {**PARAMETERS, "required_resources": ["runtime", "queue"]})
    assert queue.validate_resources(strict=True) == (True, "")


def test_overridden_required_resources() -> None:
    queue = AccountQueue(1, "q", {"default_memory": "1G"})
    assert not queue.validate_resources(strict=False, memory="2G")[0]
    assert queue.validate_resources(strict=True, account="proj") == (True, "")


@pytest.mark.parametrize("strict", [True, False])
def test_backend_problems_are_invalid_in_both_modes(strict: bool) -> None:
    queue = AccountQueue(1, "q", {})
    ok, message = queue.validate_resources(strict=strict, account="p", memory="1G", gpus="h100:1")
    assert (ok, message) == (False, "The queue has no GPUs of type 'h100'; it has a100 only.")
    assert queue.validate_resources(strict=strict, account="p", memory="1G", gpus="a100:1")[0]


def test_parse_request_hook() -> None:
    queue = AliasQueue(1, "q", {"max_cores": 4})
    assert not queue.validate_resources(strict=True, num_cores=8)[0]
    assert queue.coerce_resources(num_cores=8) == {"cores": 4, "queue": "q"}


# --- coerce_resources ----------------------------------------------------------------------


def test_coerce_clamps_fills_and_records(queue: BaseClusterQueue) -> None:
    coerced = queue.coerce_resources(memory="128G", cores=2, account="proj")
    assert isinstance(coerced, CoercedResources)
    assert isinstance(coerced, dict)
    assert coerced == {
        "cores": 2,
        "memory": "64G",
        "runtime": 3600,
        "queue": "all.q",
        "account": "proj",
    }
    assert coerced.adjustments == (
        Adjustment("memory", 128 * GIB, 64 * GIB, CLAMPED_TO_MAXIMUM),
        Adjustment("runtime", None, 3600, FILLED_FROM_DEFAULT),
    )
    assert [str(adjustment) for adjustment in coerced.adjustments] == [
        "The memory request of 128G was clamped to the queue maximum (64G).",
        "The runtime request was missing and was filled from the queue default (1h).",
    ]


def test_coerce_keeps_a_given_queue_name(queue: BaseClusterQueue) -> None:
    assert queue.coerce_resources(queue="other.q")["queue"] == "other.q"


def test_coerce_of_a_fitting_request_records_nothing(queue: BaseClusterQueue) -> None:
    coerced = queue.coerce_resources(cores=1, memory="2G", runtime=60)
    assert coerced.adjustments == ()
    assert coerced == {"cores": 1, "memory": "2G", "runtime": 60, "queue": "all.q"}


@pytest.mark.parametrize(("key", "value"), UNREADABLE, ids=repr)
def test_coerce_raises_for_unreadable_values(
    queue: BaseClusterQueue, key: str, value: object
) -> None:
    with pytest.raises(ResourceError) as caught:
        queue.coerce_resources(**{key: value})
    assert caught.value.field == key


@pytest.mark.parametrize("queue_class", [BaseClusterQueue, GibQueue])
def test_coerced_resources_can_be_validated_and_coerced_again(
    queue_class: type[BaseClusterQueue],
) -> None:
    # Jobmon re-coerces what it stored (after scaling, for a retry), often through JSON: the
    # memory a coerced dict carries must read back the same on the same queue.
    queue = queue_class(1, "q", {"max_memory": "64G", "max_cores": 4})
    coerced = queue.coerce_resources(memory="100G", cores=2)
    coerced = json.loads(json.dumps(coerced))
    assert queue.validate_resources(strict=True, **coerced) == (True, "")
    again = queue.coerce_resources(**coerced)
    assert again == coerced
    assert again.adjustments == ()


def test_coerced_resources_serialise_and_copy(queue: BaseClusterQueue) -> None:
    coerced = queue.coerce_resources(memory="128G")
    assert json.loads(json.dumps(coerced)) == coerced
    pickled = pickle.loads(pickle.dumps(coerced))  # noqa: S301 - bytes made just above
    for clone in (copy.copy(coerced), copy.deepcopy(coerced), pickled):
        assert clone == coerced
        assert clone.adjustments == coerced.adjustments


def test_coerced_resources_default_to_no_adjustments() -> None:
    assert CoercedResources({"cores": 1}).adjustments == ()


# --- the conformance kit -------------------------------------------------------------------


class TestBaseQueueConformance(QueueTests):
    @pytest.fixture
    def queue(self) -> ClusterQueue:
        return BaseClusterQueue(1, "all.q", dict(PARAMETERS))


class TestGibQueueConformance(QueueTests):
    """Jobmon-style: bare memory in GiB, a minimum, required keys and the extension rows."""

    base_request: ClassVar[dict[str, Any]] = {"account": "proj"}
    extra_good_requests: ClassVar[list[dict[str, Any]]] = [
        {"memory": 4, "runtime": "30:00"},
        {"cores": 2.5, "gpus": "gpu:a100:1", "constraint": "avx2"},
    ]
    extra_bad_requests: ClassVar[list[dict[str, Any]]] = [
        {"gpus": "h100:1"},
        {"account": None},
        {"memory": "4X"},
    ]

    @pytest.fixture
    def queue(self) -> ClusterQueue:
        parameters = {
            "max_cores": 16,
            "min_cores": 1,
            "max_memory": 128,
            "max_runtime": "7d",
            "max_gpus": 4,
            "default_memory": 2,
            "default_runtime": 600,
            "default_gpus": 0,
        }
        return _GibAccountQueue(2, "long.q", parameters)


class _GibAccountQueue(GibQueue, AccountQueue):
    pass


class TestUnlimitedQueueConformance(QueueTests):
    """A queue without limits: the kit skips what needs one, and still checks the rest."""

    @pytest.fixture
    def queue(self) -> ClusterQueue:
        return BaseClusterQueue(3, "free", {})


def test_kit_base_class_is_not_collected_and_asks_for_a_queue(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from jobfleet.core.testing.queue import QueueTests

        class TestForgotTheFixture(QueueTests):
            pass
        """
    )
    result = pytester.runpytest("-q", "-k", "within_limits")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*override the `queue` fixture to return an instance*"])
