"""Helpers of the Mesos plugin's tests: settings for the emulator, a started distributor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jobfleet.plugins.mesos.settings import MesosSettings

WORKER = str(Path(sys.executable).with_name("jobfleet-worker-node"))
EXECUTOR = f"{sys.executable} -m jobfleet.plugins.mesos.executor"


def settings_for(mc: Any, **overrides: Any) -> MesosSettings:
    """Settings reaching the emulator's master, with this environment's executor and wrapper
    and short waits."""
    values: dict[str, Any] = {
        "master": mc.master,
        "executor_command": EXECUTOR,
        "worker_command": WORKER,
        "kill_grace": 2.0,
        "kill_wait": 30.0,
        "refuse_seconds": 1.0,
        "failover_timeout": 120.0,
        "node_report_interval": 1.0,
        "default_memory": "64M",
        "default_cores": 0.5,
    }
    values.update(overrides)
    return MesosSettings(**values)
