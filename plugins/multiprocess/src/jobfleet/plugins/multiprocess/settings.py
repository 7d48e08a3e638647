"""Settings of the multiprocess backend (`--multiprocess-…`, `JOBFLEET_MULTIPROCESS_…`)."""

from __future__ import annotations

from dataclasses import dataclass

from jobfleet.core.local.settings import LocalSettings


@dataclass(frozen=True)
class MultiprocessSettings(LocalSettings):
    """The local pool's settings, all of them: cores, memory, GPUs, kill grace, cgroups and
    the overtake limit."""
