"""Where the worker-node wrapper of this installation is: what distributors put in job argv."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def wrapper_argv() -> list[str]:
    """The wrapper beside this Python, else on PATH, else `python -m` (never relying on PATH
    when the installation has its own script)."""
    beside = Path(sys.executable).with_name("jobfleet-worker-node")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("jobfleet-worker-node")
    return [found] if found else [sys.executable, "-m", "jobfleet.worker_node.cli"]
