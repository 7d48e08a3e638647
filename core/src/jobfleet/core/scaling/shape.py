"""The shape of a task or of a node: wall time, memory, cores, disk, preemptible (and GPUs).

A task's shape says what it asks for; a node's shape says what it offers. Units are the resource
model's (`jobfleet.core.resources`): seconds, bytes, cores as a float, a whole count of GPUs.

`wall_time` means two things, as in Toil's provisioner:

- for a **task**, how long it is expected to run (its requested runtime); 0 when unknown;
- for a **node**, its allocation slice: how long a node is paid for at once (3600 for hourly
  billing). The scaler packs tasks into a node *in sequence* within that slice, so short tasks
  share a node one after another. `math.inf` means the node has no slice (a local daemon, a
  node billed by the second): tasks then share it only side by side.

Shapes are ordered and hashed by their fields in declaration order (wall time, memory, cores,
disk, preemptible, then GPUs), so equal shapes hash alike and a list of shapes sorts the same
way on every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jobfleet.core.resources import format_memory

__all__ = ["UNBOUNDED", "Shape"]

UNBOUNDED = math.inf
"""A node's wall time when it has no allocation slice."""


@dataclass(frozen=True, order=True)
class Shape:
    """A task's request or a node's capacity. Frozen, ordered and hashable."""

    wall_time: float
    """Seconds: a task's expected runtime (0 when unknown), a node's allocation slice
    (`math.inf` when it has none)."""
    memory: int
    """Bytes."""
    cores: float
    disk: int
    """Bytes."""
    preemptible: bool
    """A task: it may run on preemptible (spot) capacity. A node: it is such capacity."""
    gpus: int = 0

    def __post_init__(self) -> None:
        for name in ("wall_time", "memory", "cores", "disk", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Shape.{name} must be a number, not {value!r}")
            if math.isnan(value) or value < 0:
                raise ValueError(f"Shape.{name} must be 0 or more, not {value!r}")

    def fits_in(self, capacity: Shape) -> bool:
        """Whether a task of this shape fits side by side into `capacity` (wall time aside)."""
        return (
            self.cores <= capacity.cores
            and self.memory <= capacity.memory
            and self.disk <= capacity.disk
            and self.gpus <= capacity.gpus
        )

    def __str__(self) -> str:
        wall = "unbounded" if math.isinf(self.wall_time) else f"{self.wall_time:g}s"
        text = (
            f"{self.cores:g} cores, {format_memory(self.memory)} memory, "
            f"{format_memory(self.disk)} disk, {wall}"
        )
        if self.gpus:
            text += f", {self.gpus} GPUs"
        return text + (", preemptible" if self.preemptible else "")
