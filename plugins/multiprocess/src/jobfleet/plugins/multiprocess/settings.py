"""Settings of the multiprocess backend (`--multiprocess-…`, `JOBFLEET_MULTIPROCESS_…`)."""

from __future__ import annotations

from dataclasses import dataclass

from jobfleet.core.resources import parse_cores, parse_memory
from jobfleet.core.settings import setting


@dataclass(frozen=True)
class MultiprocessSettings:
    cores: float | None = setting(
        None, help="Cores to share between tasks; default: the machine's CPU count."
    )
    memory: str | None = setting(
        None, help="Memory to share between tasks, e.g. 16G; default: the machine's total."
    )
    gpus: str | None = setting(
        None,
        help="GPU ids to hand out, e.g. 0,1,3; default: $CUDA_VISIBLE_DEVICES, or none.",
    )
    kill_grace: float = setting(
        10.0, help="Seconds a stopped task gets between SIGTERM and SIGKILL."
    )
    cgroup: str = setting(
        "auto",
        help="Task memory cgroups: auto (when a task limits memory), always or never.",
    )
    overtake_limit: int = setting(
        50,
        help="How often smaller tasks may start ahead of a waiting larger one before it "
        "gets the next free resources (bounds starvation).",
    )

    def __post_init__(self) -> None:
        if self.cores is not None:
            parse_cores(self.cores, field="cores")
        if self.memory is not None:
            parse_memory(self.memory, field="memory")
        if self.gpus is not None:
            gpu_ids(self.gpus)
        if self.kill_grace < 0:
            raise ValueError(f"kill_grace must be 0 or more seconds, not {self.kill_grace}")
        if self.cgroup not in ("auto", "always", "never"):
            raise ValueError(f"cgroup must be auto, always or never, not {self.cgroup!r}")
        if self.overtake_limit < 0:
            raise ValueError(f"overtake_limit must be 0 or more, not {self.overtake_limit}")


def gpu_ids(text: str) -> tuple[str, ...]:
    """Device ids from "0,1,3" (ids as CUDA_VISIBLE_DEVICES takes them; UUIDs allowed)."""
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(set(ids)) != len(ids):
        raise ValueError(f"gpus lists a device twice: {text!r}")
    for device in ids:
        if not all(c.isalnum() or c in "-:" for c in device):
            raise ValueError(f"gpus: {device!r} is not a device id (expected e.g. 0,1,3)")
    return ids
