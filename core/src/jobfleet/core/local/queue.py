"""The local backends' queue: the shared base, limited by the size of this machine."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from jobfleet.core.local.pool import machine_cores, machine_memory
from jobfleet.core.local.settings import gpu_ids
from jobfleet.core.queue import BaseClusterQueue


def machine_limits() -> dict[str, Any]:
    """This machine's cores, memory and GPUs, as queue parameters.

    The GPUs are those the pool hands out unless its settings say otherwise: the ids in
    $CUDA_VISIBLE_DEVICES, so none when it is unset (`LocalSettings.queue_parameters` gives
    the pool's own size when its settings set one).
    """
    limits: dict[str, Any] = {
        "max_cores": int(machine_cores()),
        "max_memory": f"{machine_memory()}B",
    }
    # Unreadable ids leave GPUs unlimited here: the distributor says so when it builds its pool.
    with contextlib.suppress(ValueError):
        limits["max_gpus"] = len(gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES", "")))
    return limits


class LocalQueue(BaseClusterQueue):
    """The machine's cores, memory and GPUs are the limits unless the parameters say otherwise."""

    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        super().__init__(queue_id, queue_name, {**machine_limits(), **parameters})
