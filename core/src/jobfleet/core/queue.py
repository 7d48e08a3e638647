"""A reusable `ClusterQueue` that backends subclass.

`BaseClusterQueue` reads the queue's limits from its parameters (see `QueueLimits`) and gives
Jobmon's validate / coerce semantics on top of `jobfleet.core.resources`. A backend usually
subclasses it in a few lines: set `bare_memory_unit` if its host sends bare memory numbers,
override `required_resources`, or override the hooks `parse_request` and `backend_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, Final

from jobfleet.core.cluster_protocol import ClusterQueue
from jobfleet.core.errors import ResourceError
from jobfleet.core.resources import (
    Adjustment,
    QueueLimits,
    ResourceRequest,
    coerce,
    validate,
)

__all__ = ["DEFAULT_QUEUE", "BaseClusterQueue", "CoercedResources"]

DEFAULT_QUEUE: Final = "default"
"""The queue a request without one goes to; a backend maps it to its own default (Slurm: the
cluster's default partition)."""


class CoercedResources(dict[str, Any]):
    """The canonical request dict that `coerce_resources` returns, with its adjustments.

    A Jobmon-style caller sees a plain dict; a jobfleet host reads `adjustments` (with
    `getattr(result, "adjustments", ())`, so that queues without it still work) to show the
    user every change made to the request.
    """

    adjustments: tuple[Adjustment, ...]

    def __init__(self, values: Mapping[str, Any], adjustments: Iterable[Adjustment] = ()) -> None:
        super().__init__(values)
        self.adjustments = tuple(adjustments)


class BaseClusterQueue(ClusterQueue):
    """A queue whose limits and defaults come from its parameters.

    Parameter keys read here: the `QueueLimits` keys (`max_cores`, `max_memory`, `max_runtime`,
    `max_gpus`, `min_cores`, `default_cores`, `default_memory`, `default_runtime`,
    `default_gpus`) and `required_resources` (a list of resource names). Every other key is
    the backend's own and is kept in `parameters` untouched.
    """

    # How a bare memory number (no unit) is read; None rejects it. A backend whose host sends
    # integer GiB, as Jobmon does, sets "G".
    bare_memory_unit: ClassVar[str | None] = None

    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        # A copy, so that a caller changing its dict later cannot make `parameters` and the
        # limits read from it disagree.
        self._parameters = dict(parameters)
        self._queue_id = queue_id
        self._queue_name = queue_name
        self._limits = QueueLimits.from_parameters(
            self._parameters, bare_memory_unit=self.bare_memory_unit
        )
        self._required = _required_from(self._parameters.get("required_resources"))

    @property
    def parameters(self) -> dict[str, Any]:
        """The queue's parameters as given (limits, defaults, backend-specific keys)."""
        return self._parameters

    @property
    def queue_name(self) -> str:
        """The queue's name, as the backend knows it."""
        return self._queue_name

    @property
    def queue_id(self) -> int:
        """The queue's id in the host's ledger."""
        return self._queue_id

    @property
    def limits(self) -> QueueLimits:
        """The limits and defaults read from the parameters, in canonical units."""
        return self._limits

    @property
    def required_resources(self) -> list[str]:
        """Resource names a request must carry (after defaults); from the parameters, or []."""
        return list(self._required)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._queue_id!r}, {self._queue_name!r})"

    # --- hooks -----------------------------------------------------------------------------

    def parse_request(self, resources: Mapping[str, Any]) -> ResourceRequest:
        """Read a request's loose values; override to accept a backend's own spellings.

        Raises `ResourceError` for a value that cannot be read.
        """
        return ResourceRequest.parse(resources, bare_memory_unit=self.bare_memory_unit)

    def backend_problems(self, request: ResourceRequest) -> list[str]:
        """Full-sentence reasons the backend cannot run a readable request at all.

        Each makes the request invalid whether strict or not (an unknown GPU type, say).
        Coercion does not consult them. The default finds none.
        """
        return []

    # --- the protocol ----------------------------------------------------------------------

    def validate_resources(self, strict: bool = False, **kwargs: Any) -> tuple[bool, str]:
        """Say whether a request can run here; never raises for a bad value.

        Unreadable values and missing required resources are invalid in both modes. Values
        outside the limits are invalid when strict, and valid with a message saying how they
        will be coerced when not.
        """
        try:
            request = self._request(kwargs)
        except ResourceError as error:
            return False, str(error)
        problems = self.backend_problems(request)
        if problems:
            return False, " ".join(problems)
        return validate(request, self._limits, strict=strict, required=self.required_resources)

    def coerce_resources(self, **kwargs: Any) -> CoercedResources:
        """Return the request fitted to this queue, in canonical form, with its adjustments.

        Values above a maximum are clamped, missing ones filled from the defaults, and `queue`
        set to this queue's name when absent; other keys pass through as given. Raises
        `ResourceError` for a value that cannot be read.
        """
        coerced, adjustments = coerce(self._request(kwargs), self._limits)
        return CoercedResources(
            coerced.to_dict(bare_memory_unit=self.bare_memory_unit), adjustments
        )

    def _request(self, resources: Mapping[str, Any]) -> ResourceRequest:
        request = self.parse_request(resources)
        if request.queue is None:
            request = replace(request, queue=self._queue_name)
        return request


def _required_from(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    # A list (or tuple): a string or a mapping would iterate, but mean something else.
    if not isinstance(value, list | tuple):
        raise _bad_required(value)
    names = tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise _bad_required(value)
    return names


def _bad_required(value: object) -> ResourceError:
    return ResourceError(
        "required_resources",
        value,
        "a list of resource names, such as ['memory', 'runtime']",
        "is not a list of resource names",
    )
