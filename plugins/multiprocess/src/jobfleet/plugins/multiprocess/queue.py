"""The local backends' queue: the shared base, limited by the size of this machine."""

from __future__ import annotations

from typing import Any

import psutil

from jobfleet.core.queue import BaseClusterQueue


def machine_limits() -> dict[str, Any]:
    """This machine's cores and memory, as queue parameters."""
    return {
        "max_cores": psutil.cpu_count() or 1,
        "max_memory": f"{psutil.virtual_memory().total}B",
    }


class MultiprocessQueue(BaseClusterQueue):
    """The machine's cores and memory are the limits unless the parameters say otherwise."""

    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        super().__init__(queue_id, queue_name, {**machine_limits(), **parameters})
