"""The dummy worker node: what a task would learn about itself if the dummy ever ran one."""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

from jobfleet.core.cluster_protocol import ClusterWorkerNode
from jobfleet.core.exit_info import ErrorState


class DummyWorkerNode(ClusterWorkerNode):
    """Reads its ids from `JOBFLEET_DISTRIBUTOR_ID` and `JOBFLEET_ARRAY_STEP_ID`."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    @property
    def distributor_id(self) -> str | None:
        return os.environ.get("JOBFLEET_DISTRIBUTOR_ID") or None

    @property
    def array_step_id(self) -> int | None:
        step = os.environ.get("JOBFLEET_ARRAY_STEP_ID", "")
        return int(step) if step.isdigit() else None

    def get_usage_stats(self) -> dict[str, Any]:
        """Usage of this process's reaped children, from the kernel (Linux: ru_maxrss in KiB)."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = children.ru_utime + children.ru_stime
        details = {
            "maxrss_source": "rusage",
            "user": children.ru_utime,
            "system": children.ru_stime,
        }
        return {
            "maxrss": children.ru_maxrss * 1024,
            "cpu": cpu,
            "wallclock": time.monotonic() - self._started,
            "usage_str": json.dumps(details),
        }

    def get_exit_info(self, exit_code: int, error_msg: str) -> tuple[str, str]:
        if exit_code == 0:
            return ErrorState.DONE, error_msg
        return ErrorState.ERROR_RECOVERABLE, error_msg or f"exit code {exit_code}"
