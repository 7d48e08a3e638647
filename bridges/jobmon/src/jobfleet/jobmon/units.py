"""Jobmon's units and queue tuples, to and from jobfleet's canonical ones.

Jobmon hands a queue its parameters as stored in its `queue` table (read with
`ast.literal_eval`): limits are `(minimum, maximum)` tuples, memory in whole GiB and runtime in
seconds, e.g. `{"cores": (1, 20), "memory": (1, 512), "runtime": (10, 86400)}`. Requests reach
the queue with memory as an integer number of GiB (Jobmon converts `"500M"` to 0 and `"1536M"`
to 2), runtime as integer seconds and cores as a number. What the queue returns is what Jobmon
stores and later passes to the distributor: memory must go back as whole GiB, since Jobmon
would round any fraction up again, past the queue's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from jobfleet.core.errors import ResourceError
from jobfleet.core.resources import ResourceRequest

GIB: Final = 1024**3

TUPLE_KEYS: Final = ("cores", "memory", "runtime")
"""The Jobmon queue parameters that are (minimum, maximum) tuples."""


def queue_parameters(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """jobfleet queue parameters for Jobmon's, and the minima jobfleet's limits cannot hold.

    `cores`, `memory` (GiB) and `runtime` (seconds) may each be a `(min, max)` pair or a single
    maximum; they become `min_cores`/`max_cores`, `max_memory` ("512G") and `max_runtime`.
    jobfleet's own limit keys (`max_memory: "64G"`, `default_runtime`, …) and every other key
    pass through unchanged. Returns (jobfleet parameters, {"memory": GiB, "runtime": s}
    minima), the minima for memory and runtime being enforced by the bridge's queue itself.
    """
    translated: dict[str, Any] = {}
    minima: dict[str, float] = {}
    for key, value in parameters.items():
        if key not in TUPLE_KEYS:
            translated[key] = value
            continue
        low, high = _pair(key, value)
        if key == "cores":
            if low is not None:
                translated["min_cores"] = low
            translated["max_cores"] = high
        elif key == "memory":
            translated["max_memory"] = f"{_number(high)}G"
            if low is not None and low > 0:
                minima["memory"] = low
        else:
            translated["max_runtime"] = int(high)
            if low is not None and low > 0:
                minima["runtime"] = low
    return translated, minima


def _pair(key: str, value: object) -> tuple[float | None, float]:
    accepted = f"a (minimum, maximum) pair such as {_EXAMPLES[key]}, or a maximum"
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ResourceError(key, value, accepted, "is not a pair")
        low, high = value
        return _checked(key, low, accepted), _checked(key, high, accepted)
    return None, _checked(key, value, accepted)


_EXAMPLES: Final = {"cores": "(1, 20)", "memory": "(1, 512)", "runtime": "(10, 86400)"}


def _checked(key: str, value: object, accepted: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ResourceError(key, value, accepted, "is not a number, 0 or more")
    return float(value)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def jobfleet_request(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A Jobmon request in jobfleet's spelling: a bare memory number is GiB ("4G")."""
    request = dict(resources)
    memory = request.get("memory")
    if isinstance(memory, int | float) and not isinstance(memory, bool):
        request["memory"] = f"{_number(memory)}G"
    return request


def whole_gib(size: int, limit: int | None = None) -> int:
    """`size` bytes as whole GiB for Jobmon: rounded down (never up past `limit`), at least 1.

    A size under 1 GiB becomes 1 unless the limit itself is under 1 GiB, which Jobmon cannot
    express at all (its 0 would mean "no memory").
    """
    whole = size // GIB
    if limit is not None:
        whole = min(whole, limit // GIB)
    return max(whole, 1)


def jobmon_resources(coerced: Mapping[str, Any], *, bare_memory_unit: str | None) -> dict[str, Any]:
    """A jobfleet queue's coerced request in Jobmon's units: memory whole GiB, runtime seconds.

    `bare_memory_unit` is the jobfleet queue's (how a bare memory number in `coerced` reads).
    """
    request = ResourceRequest.parse(coerced, bare_memory_unit=bare_memory_unit)
    result = request.to_dict()
    if request.memory is not None:
        result["memory"] = whole_gib(request.memory)
    return result
