"""First-fit-decreasing bin packing of task shapes into node shapes, with wall-time slices.

Every node is a bin with a time axis `[0, horizon)`: its cores, memory, disk and GPUs are free at
the start, and a task takes its resources for its wall time from the earliest moment they are all
free. Short tasks therefore share a node one after another as well as side by side, which is the
idea of Toil's node reservations. The result says how many nodes of each pool the tasks need to
all finish within the horizon.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from jobfleet.core.scaling.shape import Shape

__all__ = ["Bin", "PackResult", "Pool", "pack"]

_EPS = 1e-9
Vector = tuple[float, float, float, float]


def _vector(shape: Shape) -> Vector:
    return (float(shape.cores), float(shape.memory), float(shape.disk), float(shape.gpus))


def _fits(need: Vector, free: Vector) -> bool:
    return (
        need[0] <= free[0] + _EPS
        and need[1] <= free[1] + _EPS
        and need[2] <= free[2] + _EPS
        and need[3] <= free[3] + _EPS
    )


@dataclass(frozen=True)
class Pool:
    """Nodes of one type and one kind of capacity (spot or on demand)."""

    node_type: str
    preemptible: bool
    shape: Shape

    def __str__(self) -> str:
        return f"{self.node_type} ({'spot' if self.preemptible else 'on demand'})"


@dataclass
class Bin:
    """One node being filled: contiguous time segments, each with the resources left free."""

    pool: Pool
    horizon: float
    starts: list[float] = field(default_factory=list)
    free: list[Vector] = field(default_factory=list)
    tasks: int = 0
    waiting_tasks: int = 0

    def __post_init__(self) -> None:
        self.starts = [0.0]
        self.free = [_vector(self.pool.shape)]

    def place(self, need: Vector, wall_time: float) -> bool:
        """Reserve `need` for `wall_time` from the earliest start it fits; False if nowhere."""
        starts, free, horizon = self.starts, self.free, self.horizon
        count = len(starts)
        i = 0
        while i < count:
            begin = starts[i]
            end = begin + wall_time
            if end > horizon + _EPS:
                return False
            j = i
            while j < count and starts[j] < end - _EPS:
                if not _fits(need, free[j]):
                    break
                j += 1
            else:
                self._reserve(i, j, end, need)
                return True
            i = j + 1  # every start up to j overlaps segment j, which is too full
        return False

    def _reserve(self, first: int, stop: int, end: float, need: Vector) -> None:
        # Split the segment that `end` falls inside, so the reservation ends on a boundary.
        if end < self.horizon - _EPS and (
            stop >= len(self.starts) or self.starts[stop] > end + _EPS
        ):
            self.starts.insert(stop, end)
            self.free.insert(stop, self.free[stop - 1])
        for k in range(first, stop):
            f = self.free[k]
            self.free[k] = (f[0] - need[0], f[1] - need[1], f[2] - need[2], f[3] - need[3])
        self.tasks += 1


@dataclass
class PackResult:
    """How many nodes each pool needs, and what could not be placed anywhere."""

    bins: list[Bin]
    unplaceable: Counter[Shape]

    def counts(self) -> Counter[Pool]:
        return Counter(b.pool for b in self.bins)

    def waiting_per_pool(self) -> Counter[Pool]:
        found: Counter[Pool] = Counter()
        for b in self.bins:
            found[b.pool] += b.waiting_tasks
        return found


def _task_key(shape: Shape) -> tuple[float, ...]:
    # Decreasing: GPUs first (scarcest), then cores, memory, disk, then the longest.
    return (shape.gpus, shape.cores, shape.memory, shape.disk, shape.wall_time)


def pack(
    running: Iterable[Shape],
    waiting: Iterable[Shape],
    pools: Sequence[Pool],
    horizon: float,
    *,
    max_bins: dict[str, int] | None = None,
    default_wall_time: float | None = None,
) -> PackResult:
    """Pack `running` then `waiting` tasks first fit decreasing into nodes of `pools`.

    A new node is opened in the first pool (in the order given) whose shape fits the task and
    whose preemptibility the task allows (a task that is not preemptible never goes to a spot
    pool), while its node type has fewer than `max_bins[type]` nodes open. A task's wall time
    is clamped to the horizon (and to the node's own slice when that is shorter); a task of
    unknown wall time (0) counts as `default_wall_time` (the horizon when None).
    """
    limits = dict(max_bins or {})
    bins: list[Bin] = []
    per_type: Counter[str] = Counter()
    unplaceable: Counter[Shape] = Counter()
    fallback = horizon if default_wall_time is None else default_wall_time
    for shapes, are_waiting in ((running, False), (waiting, True)):
        grouped = Counter(shapes)
        for shape in sorted(grouped, key=_task_key, reverse=True):
            need = _vector(shape)
            wall = shape.wall_time if shape.wall_time > 0 else fallback
            remaining = grouped[shape]
            candidates = [b for b in bins if shape.preemptible or not b.pool.preemptible]
            for b in candidates:
                while remaining and b.place(need, min(wall, b.horizon)):
                    remaining -= 1
                    b.waiting_tasks += are_waiting
                if not remaining:
                    break
            while remaining:
                opened = _open(shape, pools, horizon, limits, per_type)
                if opened is None or not opened.place(need, min(wall, opened.horizon)):
                    unplaceable[shape] += remaining
                    break
                bins.append(opened)
                per_type[opened.pool.node_type] += 1
                remaining -= 1
                opened.waiting_tasks += are_waiting
                while remaining and opened.place(need, min(wall, opened.horizon)):
                    remaining -= 1
                    opened.waiting_tasks += are_waiting
    return PackResult(bins, unplaceable)


def _open(
    shape: Shape,
    pools: Sequence[Pool],
    horizon: float,
    limits: dict[str, int],
    per_type: Counter[str],
) -> Bin | None:
    for pool in pools:
        if pool.preemptible and not shape.preemptible:
            continue
        if not shape.fits_in(pool.shape):
            continue
        limit = limits.get(pool.node_type)
        if limit is not None and per_type[pool.node_type] >= limit:
            continue
        slice_ = pool.shape.wall_time
        node_horizon = horizon if math.isinf(slice_) or slice_ <= 0 else min(horizon, slice_)
        return Bin(pool, node_horizon)
    return None
