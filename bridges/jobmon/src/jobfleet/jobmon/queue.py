"""The Jobmon-side queue: Jobmon's units and tuples in, jobfleet's checks, whole GiB out."""

from __future__ import annotations

from typing import Any, ClassVar

from jobfleet.core.errors import ResourceError
from jobfleet.jobmon.units import GIB, jobfleet_request, jobmon_resources, queue_parameters
from jobmon.core.cluster_protocol import ClusterQueue

ROUNDED_TO_ZERO = (
    "The memory request reached the queue as 0 GiB: Jobmon rounds memory to whole GiB, so a "
    "request under 1 GiB (such as '500M') arrives as 0. Ask for at least 1G."
)


class JobmonQueue(ClusterQueue):
    """A jobfleet backend's queue, as Jobmon calls it. `build` makes one class per backend."""

    backend: ClassVar[str]
    inner_class: ClassVar[type[Any]]
    """The jobfleet backend's own queue class, which does the validating and coercing."""

    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        self._queue_id = queue_id
        self._queue_name = queue_name
        self._parameters = dict(parameters)
        translated, self._minima = queue_parameters(self._parameters)
        self.inner = self.inner_class(queue_id, queue_name, translated)
        self._bare_unit: str | None = getattr(self.inner, "bare_memory_unit", None)

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def queue_id(self) -> int:
        return self._queue_id

    @property
    def required_resources(self) -> list[str]:
        return list(self.inner.required_resources)

    def validate_resources(self, strict: bool = False, **kwargs: Any) -> tuple[bool, str]:
        """jobfleet's validation of the request in Jobmon's units; never raises."""
        request, notes = self._raised_to_minima(kwargs)
        if notes and strict:
            return False, " ".join(notes)
        try:
            ok, message = self.inner.validate_resources(strict=strict, **jobfleet_request(request))
        except (ResourceError, ValueError) as error:
            return False, " ".join([*notes, str(error)])
        return bool(ok), " ".join(filter(None, [*notes, message]))

    def coerce_resources(self, **kwargs: Any) -> dict[str, Any]:
        """The request fitted to the queue, memory in whole GiB (never above the queue's)."""
        request, _ = self._raised_to_minima(kwargs)
        coerced = self.inner.coerce_resources(**jobfleet_request(request))
        result = jobmon_resources(coerced, bare_memory_unit=self._bare_unit)
        limits = getattr(self.inner, "limits", None)
        most = getattr(limits, "max_memory", None)
        if isinstance(result.get("memory"), int) and most is not None:
            result["memory"] = max(1, min(result["memory"], most // GIB))
        return result

    def _raised_to_minima(self, resources: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The request with memory 0 and values under the queue's minima raised, and why."""
        request = dict(resources)
        notes: list[str] = []
        memory = request.get("memory")
        if _is_number(memory) and memory == 0:
            request["memory"] = max(1, self._minima.get("memory", 1))
            notes.append(ROUNDED_TO_ZERO)
        for key, low in self._minima.items():
            value = request.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < low:
                request[key] = low
                unit = "GiB" if key == "memory" else "s"
                notes.append(
                    f"The {key} request of {value:g} {unit} is below the queue minimum of "
                    f"{low:g} {unit}, so {low:g} {unit} will be used."
                )
        return request, notes


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build(backend: str) -> type[JobmonQueue]:
    """The Jobmon queue class over the jobfleet backend `backend`'s own queue class."""
    from jobfleet.core.plugins import get_cluster

    plugin = get_cluster(backend)
    name = f"Jobfleet{backend.title().replace('_', '')}Queue"
    attributes = {"backend": backend, "inner_class": plugin.queue_class, "__module__": __name__}
    return type(name, (JobmonQueue,), attributes)
