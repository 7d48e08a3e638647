"""Settings of the local backends: the resource pool, and how tasks are stopped and measured.

`LocalSettings` is what `LocalDistributor` runs on. The multiprocess backend's settings are
these fields as they are (`--multiprocess-…`); the sequential backend keeps only those that mean
something with one slot and maps them here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobfleet.core.resources import parse_cores, parse_memory
from jobfleet.core.settings import setting
from jobfleet.core.wrapper import (
    DEFAULT_CGROUP,
    DEFAULT_KILL_GRACE,
    check_cgroup_mode,
    check_kill_grace,
)

# Fields every local backend's settings have, so each says the same thing the same way (a
# function each: a dataclass field object belongs to one class).


def kill_grace_setting() -> float:
    return setting(  # type: ignore[no-any-return]
        DEFAULT_KILL_GRACE, help="Seconds a stopped task gets between SIGTERM and SIGKILL."
    )


def cgroup_setting() -> str:
    return setting(  # type: ignore[no-any-return]
        DEFAULT_CGROUP,
        help="Task memory cgroups: auto (when a task limits memory), always or never.",
    )


def slot_workers_setting() -> bool:
    return setting(  # type: ignore[no-any-return]
        True,
        help="Run tasks in long-lived slot workers (task after task, each forked by a small "
        "shell; off: one worker-node process per task).",
    )


@dataclass(frozen=True)
class LocalSettings:
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
    kill_grace: float = kill_grace_setting()
    cgroup: str = cgroup_setting()
    slot_workers: bool = slot_workers_setting()
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
        check_kill_grace(self.kill_grace)
        check_cgroup_mode(self.cgroup)
        if self.overtake_limit < 0:
            raise ValueError(f"overtake_limit must be 0 or more, not {self.overtake_limit}")

    def queue_parameters(self) -> dict[str, Any]:
        """The pool's size where these settings set it, as queue limits: a task can never be
        given more. The host puts them under the ledger's queue parameters (jobfleet's
        addition to the protocol, read with getattr; see `host.queues.queue_objects`)."""
        limits: dict[str, Any] = {}
        if self.cores is not None:
            limits["max_cores"] = parse_cores(self.cores, field="cores")
        if self.memory is not None:
            limits["max_memory"] = self.memory
        if self.gpus is not None:
            limits["max_gpus"] = len(gpu_ids(self.gpus))
        return limits


def gpu_ids(text: str) -> tuple[str, ...]:
    """Device ids from "0,1,3" (ids as CUDA_VISIBLE_DEVICES takes them; UUIDs allowed)."""
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(set(ids)) != len(ids):
        raise ValueError(f"gpus lists a device twice: {text!r}")
    for device in ids:
        if not all(c.isalnum() or c in "-:" for c in device):
            raise ValueError(f"gpus: {device!r} is not a device id (expected e.g. 0,1,3)")
    return ids
