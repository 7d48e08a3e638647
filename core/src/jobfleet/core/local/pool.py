"""The resources the local backends share out: cores (fractions allowed), memory, GPU ids.

Like Toil's resource pools: a task takes what it asked for when it starts and gives it back
when its wrapper exits. GPUs are a set of device ids, so each task gets its own devices and
learns them through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jobfleet.core.errors import ResourceError
from jobfleet.core.resources import format_memory


@dataclass(frozen=True)
class Need:
    """What one task instance takes from the pool while it runs."""

    cores: float
    memory: int
    gpus: int


class ResourcePool:
    """Free and total cores, memory and GPU ids. Not thread-safe: the distributor locks."""

    def __init__(self, cores: float, memory: int, gpu_ids: tuple[str, ...]) -> None:
        self.total = Need(cores, memory, len(gpu_ids))
        self._cores = cores
        self._memory = memory
        self._gpus = list(gpu_ids)

    def check_fits_at_all(self, need: Need) -> None:
        """Refuse, naming the resource, a request that could never run here."""
        if need.cores > self.total.cores:
            raise ResourceError(
                "cores", need.cores, f"at most {self.total.cores:g}", "is more than this pool has"
            )
        if need.memory > self.total.memory:
            raise ResourceError(
                "memory",
                format_memory(need.memory),
                f"at most {format_memory(self.total.memory)}",
                "is more than this pool has",
            )
        if need.gpus > self.total.gpus:
            raise ResourceError(
                "gpus", need.gpus, f"at most {self.total.gpus}", "is more than this pool has"
            )

    def fits(self, need: Need) -> bool:
        # A small tolerance: fractions of cores added and removed must not leak a sliver.
        return (
            need.cores <= self._cores + 1e-9
            and need.memory <= self._memory
            and need.gpus <= len(self._gpus)
        )

    def has_free_cores(self) -> bool:
        """Whether any task could start: every task takes some cores."""
        return self._cores > 1e-9

    def take(self, need: Need) -> tuple[str, ...]:
        """Take what `need` asks for (it must fit) and return the GPU ids handed out."""
        self._cores -= need.cores
        self._memory -= need.memory
        handed, self._gpus = self._gpus[: need.gpus], self._gpus[need.gpus :]
        return tuple(handed)

    def give_back(self, need: Need, gpu_ids: tuple[str, ...]) -> None:
        self._cores = min(self.total.cores, self._cores + need.cores)
        self._memory = min(self.total.memory, self._memory + need.memory)
        self._gpus.extend(gpu_ids)


def machine_cores() -> float:
    """This machine's logical CPUs, as the pool's default."""
    return float(os.cpu_count() or 1)


def machine_memory() -> int:
    """This machine's physical memory in bytes (POSIX), as the pool's default."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
