"""A reusable `ClusterWorkerNode` that backends subclass.

The worker-node wrapper measures the task and classifies how it ended; the backend's worker
node says who the task is (its distributor id and array step, read from the environment the
backend set) and maps the outcome to an error state. `BaseClusterWorkerNode` does both the
common way, so a backend usually only names its environment variables:

    class SlurmWorkerNode(BaseClusterWorkerNode):
        distributor_id_variables = ("SLURM_ARRAY_JOB_ID_TASK", "SLURM_JOB_ID")
        array_step_variables = ("SLURM_ARRAY_TASK_ID",)
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time

from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord
from jobfleet.core.worker_node_protocol import ClusterWorkerNode
from jobfleet.core.wrapper import NOT_EXECUTABLE, NOT_FOUND

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the worker-node wrapper's start path
    from collections.abc import Callable, Mapping
    from typing import Any, ClassVar, TypeAlias

    UsageSource: TypeAlias = Callable[[], dict[str, Any]]

# The shell's codes for "found but not executable" and "not found".
LAUNCHER_EXIT_CODES = frozenset({NOT_EXECUTABLE, NOT_FOUND})


class BaseClusterWorkerNode(ClusterWorkerNode):
    """Reads its ids from environment variables and maps outcomes to Jobmon's letters."""

    # Checked in order; the first one set wins.
    distributor_id_variables: ClassVar[tuple[str, ...]] = ("JOBFLEET_DISTRIBUTOR_ID",)
    array_step_variables: ClassVar[tuple[str, ...]] = ("JOBFLEET_ARRAY_STEP_ID",)

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._usage_source: UsageSource | None = None
        self.environ: Mapping[str, str] = os.environ
        """Where the ids are read: the process environment, or (a slot worker running many
        tasks) the one of the task at hand."""

    @property
    def distributor_id(self) -> str | None:
        return _first_set(self.distributor_id_variables, self.environ)

    @property
    def array_step_id(self) -> int | None:
        step = _first_set(self.array_step_variables, self.environ)
        if step is None:
            return None
        # Array steps are 0-based counters; anything else in the variable is not a step.
        return int(step) if step.isascii() and step.isdigit() else None

    def attach_usage(self, source: UsageSource) -> None:
        """Let the wrapper supply the measured usage of the task it runs."""
        self._usage_source = source

    def get_usage_stats(self) -> dict[str, Any]:
        """The wrapper's measurement when attached, else the kernel's account of children."""
        if self._usage_source is not None:
            return self._usage_source()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        details = {
            "maxrss_source": "rusage",
            "user": children.ru_utime,
            "system": children.ru_stime,
        }
        return {
            "maxrss": children.ru_maxrss * 1024,  # Linux reports KiB
            "cpu": children.ru_utime + children.ru_stime,
            "wallclock": time.monotonic() - self._started,
            "usage_str": json.dumps(details),
        }

    def get_exit_info(self, exit_code: int, error_msg: str) -> tuple[str, str]:
        """Jobmon's call: classify from the exit code alone (signals as 128 + N)."""
        state, message = self.error_state_for(record_from_exit_code(exit_code, error_msg))
        return state.value, message

    def error_state_for(self, record: ExitRecord) -> tuple[ErrorState, str]:
        """The error state and message for a classified outcome; backends may refine it."""
        return record.reason.default_error_state, record.message or _describe(record)


def record_from_exit_code(exit_code: int, message: str = "") -> ExitRecord:
    """An exit record from a shell-style exit code, where 128 + N means "killed by signal N"."""
    if exit_code == 0:
        return ExitRecord(ExitReason.COMPLETED, exit_code=0, message=message)
    if exit_code in LAUNCHER_EXIT_CODES:
        return ExitRecord(ExitReason.LAUNCHER_ERROR, exit_code=exit_code, message=message)
    if 128 < exit_code < 128 + signal.NSIG:
        return ExitRecord(ExitReason.FAILED, signal=exit_code - 128, message=message)
    return ExitRecord(ExitReason.FAILED, exit_code=exit_code, message=message)


def _describe(record: ExitRecord) -> str:
    if record.signal is not None:
        name = _signal_name(record.signal)
        dumped = " (core dumped)" if record.core_dumped else ""
        return f"{record.reason.value}: killed by {name}{dumped}"
    if record.exit_code is not None:
        return f"{record.reason.value}: exit code {record.exit_code}"
    return record.reason.value


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _first_set(variables: tuple[str, ...], environ: Mapping[str, str]) -> str | None:
    for variable in variables:
        value = environ.get(variable)
        if value:
            return value
    return None
