"""The local backends' queue: the shared base, limited by the size of this machine."""

from __future__ import annotations

from typing import Any

from jobfleet.core.local.pool import machine_cores, machine_memory
from jobfleet.core.queue import BaseClusterQueue


def machine_limits() -> dict[str, Any]:
    """This machine's cores and memory, as queue parameters."""
    return {
        "max_cores": int(machine_cores()),
        "max_memory": f"{machine_memory()}B",
    }


class LocalQueue(BaseClusterQueue):
    """The machine's cores and memory are the limits unless the parameters say otherwise."""

    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        super().__init__(queue_id, queue_name, {**machine_limits(), **parameters})
