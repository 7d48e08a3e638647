"""Offers, shapes and packing: which waiting tasks go into which offer.

An offer holds scalar resources (`cpus`, `mem` and `disk` in MB, `gpus`), possibly in
several entries (unreserved `*`, reserved for the framework's role); a task's resources are cut
from those entries, keeping each entry's role, reservation and allocation metadata, so the
master accepts them as offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCALARS = ("cpus", "mem", "disk", "gpus")
_EPSILON = 1e-9
_METADATA = ("role", "reservation", "reservations", "allocation_info", "provider_id")


@dataclass(frozen=True)
class Shape:
    """What a task needs: cores, memory and disk in MB (Mesos' unit), GPUs."""

    cpus: float
    mem: float
    disk: float = 0.0
    gpus: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"cpus": self.cpus, "mem": self.mem, "disk": self.disk, "gpus": self.gpus}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shape:
        return cls(*(float(data.get(name) or 0.0) for name in SCALARS))

    def fits(self, available: Mapping[str, float]) -> bool:
        return all(value <= available.get(name, 0.0) + _EPSILON for name, value in self.items())

    def items(self) -> Iterable[tuple[str, float]]:
        return ((name, value) for name, value in self.as_dict().items() if value > 0)

    def size(self) -> tuple[float, float, float, float]:
        """The order of "largest first": GPUs, then cores, memory, disk."""
        return (self.gpus, self.cpus, self.mem, self.disk)


def scalars(resources: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The totals of an offer's (or task's) scalar resources, by name."""
    totals: dict[str, float] = dict.fromkeys(SCALARS, 0.0)
    for resource in resources:
        name = resource.get("name")
        if name in totals and resource.get("type", "SCALAR") == "SCALAR":
            totals[name] += float((resource.get("scalar") or {}).get("value") or 0.0)
    return totals


def attributes(offer: Mapping[str, Any]) -> dict[str, str]:
    """An offer's agent attributes as text (`TEXT`, `SCALAR`, `RANGES`, `SET`)."""
    found: dict[str, str] = {}
    for attribute in offer.get("attributes") or []:
        name = attribute.get("name")
        if not isinstance(name, str):
            continue
        if "text" in attribute:
            found[name] = str((attribute["text"] or {}).get("value", ""))
        elif "scalar" in attribute:
            value = float((attribute["scalar"] or {}).get("value", 0.0))
            found[name] = f"{value:g}"
        elif "set" in attribute:
            found[name] = ",".join((attribute["set"] or {}).get("item") or [])
        elif "ranges" in attribute:
            ranges = (attribute["ranges"] or {}).get("range") or []
            found[name] = ",".join(f"[{r.get('begin')}-{r.get('end')}]" for r in ranges)
    return found


def placement_allows(
    attrs: Mapping[str, str],
    required: Mapping[str, Sequence[str]],
    preemptible_marker: tuple[str, str],
    task_preemptible: bool,
) -> bool:
    """Whether an agent with `attrs` may take a task: the required attributes, and a
    preemptible agent only for a task that asked for preemptible capacity."""
    for key, values in required.items():
        if key not in attrs or (values and attrs[key] not in values):
            return False
    name, value = preemptible_marker
    return task_preemptible or attrs.get(name, "").lower() != value.lower()


def is_preemptible(attrs: Mapping[str, str], preemptible_marker: tuple[str, str]) -> bool:
    name, value = preemptible_marker
    return attrs.get(name, "").lower() == value.lower()


class OfferPool:
    """What is left of one offer while tasks are cut from it."""

    def __init__(self, offer: Mapping[str, Any]) -> None:
        self.entries = [
            dict(resource)
            for resource in offer.get("resources") or []
            if resource.get("name") in SCALARS and resource.get("type", "SCALAR") == "SCALAR"
        ]
        self.left = scalars(self.entries)

    def take(self, shape: Shape) -> list[dict[str, Any]] | None:
        """The resource entries for `shape`, cut from the offer; None when it does not fit."""
        if not shape.fits(self.left):
            return None
        taken: list[dict[str, Any]] = []
        for name, wanted in shape.items():
            need = wanted
            for entry in self.entries:
                if entry.get("name") != name or need <= _EPSILON:
                    continue
                scalar = entry.setdefault("scalar", {"value": 0.0})
                have = float(scalar.get("value") or 0.0)
                if have <= _EPSILON:
                    continue
                cut = min(have, need)
                scalar["value"] = have - cut
                need -= cut
                piece = {k: entry[k] for k in _METADATA if k in entry}
                piece.update(name=name, type="SCALAR", scalar={"value": round(cut, 6)})
                taken.append(piece)
            self.left[name] -= wanted
        return taken
