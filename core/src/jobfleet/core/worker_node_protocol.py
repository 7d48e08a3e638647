"""`ClusterWorkerNode`, the one backend protocol the worker-node wrapper loads at every task.

Apart from `jobfleet.core.cluster_protocol` (which re-exports it), and without `typing` at run
time: for type checkers it is a `typing.Protocol`, at run time an `abc.ABC` with the same
abstract members, so that a plugin's worker node (which subclasses it) costs the wrapper
neither `typing` nor the other protocols.
"""

from __future__ import annotations

import os
from abc import abstractmethod

from jobfleet.core.naming import safe_file_name
from jobfleet.core.private import make_private_dirs, open_private

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    from abc import ABC as Protocol

__all__ = ["ClusterWorkerNode"]


class ClusterWorkerNode(Protocol):
    """The backend's view from inside a running task: who am I, how did it go."""

    @abstractmethod
    def __init__(self) -> None:
        """Build from the environment the backend gave the task (no arguments)."""

    @property
    @abstractmethod
    def distributor_id(self) -> str | None:
        """This task's id in the backend, read from the environment."""

    @property
    @abstractmethod
    def array_step_id(self) -> int | None:
        """This task's step in its array (0-based), or None outside an array."""

    @abstractmethod
    def get_usage_stats(self) -> dict[str, Any]:
        """`maxrss` (bytes), `cpu` (seconds), `wallclock` (seconds) and `usage_str` (JSON)."""

    @abstractmethod
    def get_exit_info(self, exit_code: int, error_msg: str) -> tuple[str, str]:
        """Map the command's exit code and error text to an error state letter and a message."""

    def initialize_logfile(self, log_type: str, log_dir: str | None, name: str) -> str:
        """Create the log file for `log_type` (`stdout`, `stderr`) and return its path.

        The task name is made safe for the file system (see `jobfleet.core.naming`), so no
        name can produce a path outside `log_dir` or one that is too long. Without a `log_dir`
        (Jobmon passes None for a task that keeps no logs; an empty one is taken alike) the
        path is `/dev/null`, as in Jobmon's own worker nodes.
        """
        if not log_dir:
            return os.devnull
        suffix = f".{log_type}.{self.distributor_id or 'local'}"
        path = os.path.join(log_dir, safe_file_name(name, suffix))
        # Owner-only: a task's output may show its secrets.
        make_private_dirs(log_dir)
        os.close(open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        return path
