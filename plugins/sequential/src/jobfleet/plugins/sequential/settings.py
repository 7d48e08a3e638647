"""Settings of the sequential backend (`--sequential-…`, `JOBFLEET_SEQUENTIAL_…`)."""

from __future__ import annotations

from dataclasses import dataclass

from jobfleet.core.settings import setting


@dataclass(frozen=True)
class SequentialSettings:
    kill_grace: float = setting(
        10.0, help="Seconds a stopped task gets between SIGTERM and SIGKILL."
    )
    cgroup: str = setting(
        "auto",
        help="Task memory cgroups: auto (when a task limits memory), always or never.",
    )

    def __post_init__(self) -> None:
        if self.kill_grace < 0:
            raise ValueError(f"kill_grace must be 0 or more seconds, not {self.kill_grace}")
        if self.cgroup not in ("auto", "always", "never"):
            raise ValueError(f"cgroup must be auto, always or never, not {self.cgroup!r}")
