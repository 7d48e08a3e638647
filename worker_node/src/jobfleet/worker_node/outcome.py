"""Classifying how a task ended, from what the wrapper observed."""

from __future__ import annotations

import os
import signal

from jobfleet.core.base_worker_node import LAUNCHER_EXIT_CODES
from jobfleet.core.exit_info import ExitReason, ExitRecord
from jobfleet.core.frozen import Frozen

# Without a cgroup's OOM counter, a SIGKILL while the tree held this share of its memory limit
# is taken for an out-of-memory kill (the kernel's, or the wrapper's own enforcement).
NEAR_LIMIT = 0.9


class Observation(Frozen):
    """What the wrapper saw of one run of the command.

    `wait_status` is the raw status from wait4 (None when the command never started);
    `cancelled_by` the signal (SIGTERM, SIGINT) that asked the wrapper to stop the task;
    `oom_kills` the OOM kills counted by the task's cgroup; `memory_enforced` says the wrapper
    itself killed the tree for passing its memory limit (no cgroup).
    """

    _fields = (
        "wait_status",
        "start_error",
        "timed_out",
        "cancelled_by",
        "oom_kills",
        "memory_enforced",
        "memory_limit",
        "memory_peak",
    )
    __slots__ = _fields

    wait_status: int | None
    start_error: str | None
    timed_out: bool
    cancelled_by: int | None
    oom_kills: int
    memory_enforced: bool
    memory_limit: int | None
    memory_peak: int | None

    def __init__(
        self,
        wait_status: int | None,
        start_error: str | None = None,
        timed_out: bool = False,
        cancelled_by: int | None = None,
        oom_kills: int = 0,
        memory_enforced: bool = False,
        memory_limit: int | None = None,
        memory_peak: int | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "wait_status", wait_status)
        put(self, "start_error", start_error)
        put(self, "timed_out", timed_out)
        put(self, "cancelled_by", cancelled_by)
        put(self, "oom_kills", oom_kills)
        put(self, "memory_enforced", memory_enforced)
        put(self, "memory_limit", memory_limit)
        put(self, "memory_peak", memory_peak)


def classify(seen: Observation) -> ExitRecord:
    """The exit record: reason, exit code or signal, core dump, and a message."""
    if seen.wait_status is None:
        message = f"the command could not be started: {seen.start_error}"
        return ExitRecord(ExitReason.LAUNCHER_ERROR, message=message)
    exit_code, signal_number, core = _decode(seen.wait_status)
    reason = _reason(seen, exit_code, signal_number)
    killed_by = _killed_by(exit_code, signal_number)
    if reason is ExitReason.OOM and killed_by is not None:
        # One shape for an OOM kill: the task died of the signal, whether directly or through a
        # shell that passed it on as 128 + N (as it does when the kernel picks its child).
        exit_code, signal_number = None, killed_by
    return ExitRecord(
        reason,
        exit_code=exit_code,
        signal=signal_number,
        core_dumped=core,
        raw_state=_raw_state(exit_code, signal_number),
        message=_message(reason, seen, exit_code, signal_number),
    )


def _decode(status: int) -> tuple[int | None, int | None, bool]:
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status), os.WCOREDUMP(status)
    return os.WEXITSTATUS(status), None, False


def _killed_by(exit_code: int | None, signal_number: int | None) -> int | None:
    """The signal that ended the command, also when a shell passed it on as 128 + N."""
    if signal_number is not None:
        return signal_number
    if exit_code is not None and 128 < exit_code < 128 + signal.NSIG:
        return exit_code - 128
    return None


def _reason(seen: Observation, exit_code: int | None, signal_number: int | None) -> ExitReason:
    if seen.timed_out:
        return ExitReason.TIMEOUT
    if exit_code == 0:
        return ExitReason.COMPLETED
    if seen.oom_kills or seen.memory_enforced or _near_limit_kill(seen, exit_code, signal_number):
        return ExitReason.OOM
    if seen.cancelled_by is not None:
        return ExitReason.CANCELLED
    if exit_code in LAUNCHER_EXIT_CODES:
        return ExitReason.LAUNCHER_ERROR
    return ExitReason.FAILED


def _near_limit_kill(seen: Observation, exit_code: int | None, signal_number: int | None) -> bool:
    if _killed_by(exit_code, signal_number) != signal.SIGKILL:
        return False
    if seen.memory_limit is None or seen.memory_peak is None:
        return False
    return seen.memory_peak >= NEAR_LIMIT * seen.memory_limit


def _raw_state(exit_code: int | None, signal_number: int | None) -> str:
    if signal_number is not None:
        return f"signal {_name(signal_number)}"
    return f"exit {exit_code}"


def _message(
    reason: ExitReason, seen: Observation, exit_code: int | None, signal_number: int | None
) -> str:
    how = (
        f"killed by {_name(signal_number)}"
        if signal_number is not None
        else f"exit code {exit_code}"
    )
    detail = {
        ExitReason.TIMEOUT: "the runtime limit was reached",
        ExitReason.OOM: _oom_detail(seen),
        ExitReason.CANCELLED: f"the wrapper was asked to stop ({_name(seen.cancelled_by)})",
        ExitReason.LAUNCHER_ERROR: "the command was not found or is not executable",
    }.get(reason)
    return f"{reason.value}: {how}" + (f"; {detail}" if detail else "")


def _oom_detail(seen: Observation) -> str:
    if seen.oom_kills:
        return f"the task's memory cgroup counted {seen.oom_kills} OOM kill(s)"
    if seen.memory_enforced:
        return "the tree passed its memory limit and the wrapper killed it"
    return "killed near its memory limit"


def _name(number: int | None) -> str:
    if number is None:
        return "?"
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"
