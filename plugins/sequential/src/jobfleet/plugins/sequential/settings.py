"""Settings of the sequential backend (`--sequential-…`, `JOBFLEET_SEQUENTIAL_…`)."""

from __future__ import annotations

from dataclasses import dataclass

from jobfleet.core.local.settings import cgroup_setting, kill_grace_setting, slot_workers_setting
from jobfleet.core.wrapper import check_cgroup_mode, check_kill_grace


@dataclass(frozen=True)
class SequentialSettings:
    """Only what means something with one slot: the pool is the whole machine."""

    kill_grace: float = kill_grace_setting()
    cgroup: str = cgroup_setting()
    slot_workers: bool = slot_workers_setting()

    def __post_init__(self) -> None:
        check_kill_grace(self.kill_grace)
        check_cgroup_mode(self.cgroup)
