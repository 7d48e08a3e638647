"""The sequential distributor: the local distributor with a single slot."""

from __future__ import annotations

from typing import Any, ClassVar

from jobfleet.core.local.distributor import LocalDistributor
from jobfleet.core.local.settings import LocalSettings
from jobfleet.plugins.sequential.settings import SequentialSettings


class SequentialDistributor(LocalDistributor):
    """One task instance at a time, in submission order, whatever it asks for.

    The pool is the whole machine, so a request that could never run here is still refused
    at submission; the single slot is what makes it sequential.
    """

    cluster_type: ClassVar[str] = "sequential"
    settings_class: ClassVar[type[Any] | None] = SequentialSettings
    max_parallel: ClassVar[int | None] = 1

    def local_settings(self) -> LocalSettings:
        chosen: SequentialSettings = self.settings
        # No overtaking: with one slot, the order of submission is the order of running.
        return LocalSettings(
            kill_grace=chosen.kill_grace,
            cgroup=chosen.cgroup,
            slot_workers=chosen.slot_workers,
            overtake_limit=0,
        )
