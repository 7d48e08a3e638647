"""Conformance: what every `ClusterQueue` must do with a resource request.

The tests use only the public protocol and the queue's `parameters`, from which they read the
limits (`QueueLimits.from_parameters`); a check that needs a limit the queue does not have is
skipped with a reason naming it. A plugin's tests subclass `QueueTests` in a few lines:

    class TestMyQueue(QueueTests):
        extra_bad_requests = [{"gpus": "h100:1"}]  # a GPU type this backend never has

        @pytest.fixture
        def queue(self):
            return MyQueue(1, "batch", {"max_memory": "64G", "max_cores": 16})
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from jobfleet.core.cluster_protocol import ClusterQueue
from jobfleet.core.resources import (
    GIB,
    LIMITED_FIELDS,
    MAX_CORES,
    MAX_GPUS,
    MAX_MEMORY,
    MAX_RUNTIME,
    QueueLimits,
    ResourceRequest,
    memory_text,
)

# Values no queue may accept, strict or not.
UNREADABLE_VALUES: tuple[object, ...] = ("lots", -1, float("nan"), True, [1])

# Keys jobfleet does not read: every queue passes them through as given.
PASS_THROUGH: dict[str, Any] = {
    "project": "proj_jobfleet",
    "constraint": "intel&avx2",
    "stdout": "/dev/null",
    "labels": {"team": "conformance", "ids": [1, 2]},
}

# The most a request may ask for at all; an "over the maximum" value must stay below it, or it
# would be unreadable rather than merely too large.
_ABSOLUTE: dict[str, float] = {
    "cores": MAX_CORES,
    "memory": MAX_MEMORY,
    "runtime": MAX_RUNTIME,
    "gpus": MAX_GPUS,
}


def limits_of(queue: ClusterQueue) -> QueueLimits:
    """The queue's limits, read from its parameters the way `BaseClusterQueue` reads them."""
    bare_unit = getattr(queue, "bare_memory_unit", None)
    return QueueLimits.from_parameters(queue.parameters, bare_memory_unit=bare_unit)


def read_back(queue: ClusterQueue, resources: dict[str, Any]) -> ResourceRequest:
    """A coerced dict read in canonical units, whatever form the queue writes memory in."""
    bare_unit = getattr(queue, "bare_memory_unit", None)
    return ResourceRequest.parse(resources, bare_memory_unit=bare_unit)


def _as_request_value(name: str, value: float) -> object:
    # Memory goes with a unit (a bare number is ambiguous); the others as numbers.
    if name == "memory":
        return memory_text(int(value))
    if name == "cores":
        return value
    return int(value)


class QueueTests:
    """Subclass and override the `queue` fixture with a queue that has limits.

    `base_request` holds keys every request needs on this queue (an account, say).
    `extra_good_requests` are requests valid even when strict; `extra_bad_requests` are
    requests invalid whether strict or not. Both join the built-in rows.
    """

    base_request: ClassVar[dict[str, Any]] = {}
    extra_good_requests: ClassVar[list[dict[str, Any]]] = []
    extra_bad_requests: ClassVar[list[dict[str, Any]]] = []

    @pytest.fixture
    def queue(self) -> ClusterQueue:
        """The queue under test, with limits (and defaults) in its parameters."""
        raise NotImplementedError(
            "override the `queue` fixture to return an instance of your ClusterQueue with limits"
        )

    # -- building requests --------------------------------------------------------------------

    def fitting_request(self, queue: ClusterQueue) -> dict[str, Any]:
        """A request inside every limit of the queue, with every limited field given."""
        limits = limits_of(queue)
        request = dict(self.base_request)
        request["cores"] = _inside(limits, "cores", 1)
        request["memory"] = memory_text(int(_inside(limits, "memory", GIB)))
        request["runtime"] = int(_inside(limits, "runtime", 600))
        if limits.max_gpus is not None:
            request["gpus"] = int(_inside(limits, "gpus", 1))
        return request

    def good_requests(self, queue: ClusterQueue) -> Iterator[dict[str, Any]]:
        yield self.fitting_request(queue)
        for request in self.extra_good_requests:
            yield {**self.base_request, **request}

    def over_maximum(self, queue: ClusterQueue, name: str) -> tuple[dict[str, Any], float]:
        """A fitting request with `name` above the queue's maximum, and that maximum.

        Skips the test when the queue has no such maximum, or when its maximum is already the
        most any request may ask for.
        """
        found = self._over_maximum(queue, name)
        if isinstance(found, str):
            pytest.skip(found)
        return found

    def _over_maximum(self, queue: ClusterQueue, name: str) -> tuple[dict[str, Any], float] | str:
        """As `over_maximum`, with the reason to skip returned instead of raised."""
        _, maximum, _ = limits_of(queue).bounds(name)
        if maximum is None:
            return f"the queue has no max_{name} limit"
        above = min(maximum * 2 if name == "memory" else maximum + 1, _ABSOLUTE[name])
        if above <= maximum:
            return f"the queue's max_{name} is already the most any request may ask for"
        request = self.fitting_request(queue)
        request[name] = _as_request_value(name, above)
        return request, maximum

    # -- validate -----------------------------------------------------------------------------

    def test_request_within_limits_is_valid(self, queue: ClusterQueue) -> None:
        for request in self.good_requests(queue):
            for strict in (True, False):
                ok, message = queue.validate_resources(strict=strict, **request)
                assert ok, f"{request} with strict={strict} was refused: {message}"

    @pytest.mark.parametrize("name", LIMITED_FIELDS)
    def test_request_over_a_maximum_is_valid_only_when_not_strict(
        self, queue: ClusterQueue, name: str
    ) -> None:
        request, _ = self.over_maximum(queue, name)
        ok, message = queue.validate_resources(strict=True, **request)
        assert not ok, f"{request} is over max_{name} but passed strict validation"
        assert message, "a refusal must say why"
        ok, message = queue.validate_resources(strict=False, **request)
        assert ok, f"{request} is only over max_{name}, yet was refused: {message}"
        assert message, "a request that will be coerced must say how"

    @pytest.mark.parametrize("value", UNREADABLE_VALUES, ids=repr)
    @pytest.mark.parametrize("name", LIMITED_FIELDS)
    def test_unreadable_value_is_invalid_in_both_modes(
        self, queue: ClusterQueue, name: str, value: object
    ) -> None:
        request = {**self.fitting_request(queue), name: value}
        for strict in (True, False):
            ok, message = queue.validate_resources(strict=strict, **request)
            assert not ok, f"{name}={value!r} passed validation with strict={strict}"
            assert message, "a refusal must say why"

    def test_extra_bad_requests_are_invalid_in_both_modes(self, queue: ClusterQueue) -> None:
        for row in self.extra_bad_requests:
            request = {**self.base_request, **row}
            for strict in (True, False):
                ok, message = queue.validate_resources(strict=strict, **request)
                assert not ok, f"{request} passed validation with strict={strict}"
                assert message, "a refusal must say why"

    # -- coerce -------------------------------------------------------------------------------

    def test_coerce_returns_a_dict(self, queue: ClusterQueue) -> None:
        assert isinstance(queue.coerce_resources(**self.fitting_request(queue)), dict)

    @pytest.mark.parametrize("name", LIMITED_FIELDS)
    def test_coerce_clamps_to_each_maximum(self, queue: ClusterQueue, name: str) -> None:
        request, maximum = self.over_maximum(queue, name)
        coerced = queue.coerce_resources(**request)
        granted = getattr(read_back(queue, coerced), name)
        assert granted == maximum, f"{name} was not clamped to the queue's max_{name}"
        adjustments = getattr(coerced, "adjustments", None)
        if adjustments is not None:
            assert any(adjustment.field == name for adjustment in adjustments), (
                f"clamping {name} was not recorded in the adjustments"
            )

    @pytest.mark.parametrize("name", LIMITED_FIELDS)
    def test_coerce_fills_each_default(self, queue: ClusterQueue, name: str) -> None:
        _, _, default = limits_of(queue).bounds(name)
        if default is None:
            pytest.skip(f"the queue has no default_{name}")
        request = self.fitting_request(queue)
        request.pop(name, None)
        coerced = queue.coerce_resources(**request)
        filled = getattr(read_back(queue, coerced), name)
        assert filled == default, f"{name} was not filled from default_{name}"

    def test_coerce_keeps_pass_through_keys(self, queue: ClusterQueue) -> None:
        coerced = queue.coerce_resources(**self.fitting_request(queue), **PASS_THROUGH)
        for key, value in PASS_THROUGH.items():
            assert coerced.get(key) == value, f"the pass-through key {key!r} was not kept"

    def test_coerce_of_a_fitting_request_changes_only_its_form(self, queue: ClusterQueue) -> None:
        for request in self.good_requests(queue):
            before = read_back(queue, request)
            after = read_back(queue, queue.coerce_resources(**request))
            for key in (*LIMITED_FIELDS, "gpu_type"):
                if getattr(before, key) is not None:
                    assert getattr(after, key) == getattr(before, key), (
                        f"coercing {request} changed {key}"
                    )
            for key, value in before.extra.items():
                assert after.extra.get(key) == value, f"coercing {request} changed {key}"

    def test_validate_after_coerce_is_valid_strict(self, queue: ClusterQueue) -> None:
        over = [self._over_maximum(queue, name) for name in LIMITED_FIELDS]
        requests = [
            *self.good_requests(queue),
            *(found[0] for found in over if isinstance(found, tuple)),
        ]
        for request in requests:
            coerced = queue.coerce_resources(**request)
            ok, message = queue.validate_resources(strict=True, **coerced)
            assert ok, f"{request} coerced to {dict(coerced)} is still refused: {message}"
            assert queue.coerce_resources(**coerced) == coerced, "coercing twice changed it"


def _inside(limits: QueueLimits, name: str, wanted: float) -> float:
    """`wanted`, moved inside the queue's minimum and maximum for `name`."""
    minimum, maximum, _ = limits.bounds(name)
    value = wanted if minimum is None else max(wanted, minimum)
    return value if maximum is None else min(value, maximum)
