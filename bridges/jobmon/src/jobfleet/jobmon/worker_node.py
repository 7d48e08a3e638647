"""The Jobmon-side worker node: Jobmon's worker, run inside jobfleet's wrapper, asks it who it is.

The process tree on a node is: the jobfleet wrapper (limits, cgroup, process-tree cleanup,
final report) → Jobmon's worker (`worker_node_entry_point`, which reports to Jobmon's server) →
the user's command. Jobmon's worker builds this class, so everything here is read from the
environment the jobfleet wrapper gave it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from typing import Any, ClassVar, Final

from jobfleet.core.exit_info import ErrorState
from jobmon.core.cluster_protocol import ClusterWorkerNode

DISTRIBUTOR_ID_VARIABLE: Final = "JOBFLEET_TASK_INSTANCE_ID"
"""The jobfleet wrapper's task-instance id, which is the distributor id the bridge gave Jobmon."""

ARRAY_STEP_VARIABLE: Final = "JOBFLEET_JOBMON_ARRAY_STEP"
"""The instance's 0-based step in its Jobmon array batch, set in its spec's environment."""


class JobmonWorkerNode(ClusterWorkerNode):
    """Ids from the wrapper's environment; exit codes read as Jobmon's letters."""

    backend: ClassVar[str] = ""

    def __init__(self, distributor_id: str | None = None) -> None:
        # `distributor_id` is for the bridge's own use (a backend that runs nothing reports
        # for its instances from the distributor's process); Jobmon passes nothing.
        self._distributor_id = distributor_id
        self._started = time.monotonic()
        self._oom_kills_before = _oom_kills()

    @property
    def distributor_id(self) -> str | None:
        return self._distributor_id or os.environ.get(DISTRIBUTOR_ID_VARIABLE) or None

    @property
    def array_step_id(self) -> int | None:
        step = os.environ.get(ARRAY_STEP_VARIABLE, "")
        return int(step) if step.isascii() and step.isdigit() else None

    def get_exit_info(self, exit_code: int, error_msg: str) -> tuple[str, str]:
        """Jobmon's worker passes `-N` when signal N ended the command (a shell, 128 + N)."""
        number = _signal_of(exit_code)
        oom_kills = _oom_kills() - self._oom_kills_before
        if oom_kills > 0 and number in (None, signal.SIGKILL):
            what = f"exit code {exit_code}" if number is None else "killed by SIGKILL"
            message = (
                f"out of memory: {what}, and the task's memory cgroup counted "
                f"{oom_kills} OOM kill{'s' if oom_kills > 1 else ''}"
            )
            return ErrorState.RESOURCE_ERROR.value, _with(message, error_msg)
        if number is not None:
            return ErrorState.ERROR_RECOVERABLE.value, _with(
                f"killed by {_signal_name(number)}", error_msg
            )
        return ErrorState.ERROR_RECOVERABLE.value, _with(f"exit code {exit_code}", error_msg)

    def get_usage_stats(self) -> dict[str, Any]:
        """What the command used, as strings (Jobmon 3.7 stores them as given)."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = children.ru_utime + children.ru_stime
        wallclock = time.monotonic() - self._started
        maxrss = children.ru_maxrss * 1024  # Linux reports KiB
        details = {"maxrss": maxrss, "cpu": round(cpu, 3), "wallclock": round(wallclock, 3)}
        return {
            "maxrss": str(maxrss),
            "cpu": f"{cpu:.3f}",
            "wallclock": f"{wallclock:.3f}",
            "usage_str": json.dumps(details),
        }

    def initialize_logfile(self, log_type: str, log_dir: str | None, name: str) -> str:
        """The log file for `log_type`; `/dev/null` when the task has no log directory."""
        if not log_dir:
            return os.devnull
        from jobfleet.core.naming import safe_file_name
        from jobfleet.core.private import make_private_dirs

        letter = "e" if log_type == "stderr" else "o"
        make_private_dirs(log_dir)
        suffix = f".{letter}{self.distributor_id or 'local'}"
        return os.path.join(log_dir, safe_file_name(name, suffix))


def _signal_of(exit_code: int) -> int | None:
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 128 + signal.NSIG:
        return exit_code - 128
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _with(message: str, error_msg: str) -> str:
    return f"{message}. {error_msg}".rstrip() if error_msg else message


def _oom_kills() -> int:
    """The OOM kills the memory cgroup of this process has counted (0 without one)."""
    from jobfleet.worker_node.cgroup import TaskCgroup, current_memory_cgroup

    try:
        info = current_memory_cgroup()
        return TaskCgroup.open(info).oom_kills() if info is not None else 0
    except (OSError, ValueError):
        return 0


def build(backend: str) -> type[JobmonWorkerNode]:
    """The worker-node class of the Jobmon cluster type `jobfleet_<backend>`.

    The same for every backend: the ids come from the jobfleet wrapper, whatever ran it.
    """
    name = f"Jobfleet{backend.title().replace('_', '')}WorkerNode"
    return type(name, (JobmonWorkerNode,), {"backend": backend, "__module__": __name__})
