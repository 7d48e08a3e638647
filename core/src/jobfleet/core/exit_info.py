"""How a task instance ended: error states, exit reasons and the structured exit record.

Error states use Jobmon's letters so that any host built for Jobmon reads them unchanged.
"""

from __future__ import annotations

import enum

from jobfleet.core.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the worker-node wrapper's start path
    from collections.abc import Iterator, Mapping
    from typing import Any


class ErrorState(enum.StrEnum):
    """The verdict a backend gives on a finished task instance (Jobmon's letters)."""

    DONE = "D"
    """Finished with success."""
    ERROR_RECOVERABLE = "E"
    """The application failed; a plain retry may succeed."""
    RESOURCE_ERROR = "Z"
    """Killed for exceeding memory or runtime; retry with scaled resources."""
    UNKNOWN_ERROR = "U"
    """The outcome cannot be told (lost node, missing report); retry."""
    ERROR_FATAL = "F"
    """Retrying cannot help (bad command, cancelled by someone else, wrapper broken)."""
    KILL_SELF = "K"
    """Killed on the host's request."""

    @property
    def retryable(self) -> bool:
        """Whether a host should start another attempt (within its attempt budget)."""
        return self in _RETRYABLE

    @property
    def scales_resources(self) -> bool:
        """Whether the next attempt should ask for more memory and runtime."""
        return self is ErrorState.RESOURCE_ERROR


_RETRYABLE = frozenset(
    {ErrorState.ERROR_RECOVERABLE, ErrorState.RESOURCE_ERROR, ErrorState.UNKNOWN_ERROR}
)


class ExitReason(enum.StrEnum):
    """Why a task instance ended, independent of the backend."""

    COMPLETED = "completed"
    FAILED = "failed"
    OOM = "oom"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    NODE_FAIL = "node_fail"
    CANCELLED = "cancelled"
    LOST = "lost"
    LAUNCHER_ERROR = "launcher_error"

    @property
    def default_error_state(self) -> ErrorState:
        """The error state a backend reports for this reason unless it knows better.

        `cancelled` maps to K (killed on request); a backend that can tell a cancellation by
        someone else reports F instead.
        """
        return _DEFAULT_STATES[self]


_DEFAULT_STATES: Mapping[ExitReason, ErrorState] = {
    ExitReason.COMPLETED: ErrorState.DONE,
    ExitReason.FAILED: ErrorState.ERROR_RECOVERABLE,
    ExitReason.OOM: ErrorState.RESOURCE_ERROR,
    ExitReason.TIMEOUT: ErrorState.RESOURCE_ERROR,
    ExitReason.PREEMPTED: ErrorState.UNKNOWN_ERROR,
    ExitReason.NODE_FAIL: ErrorState.UNKNOWN_ERROR,
    ExitReason.CANCELLED: ErrorState.KILL_SELF,
    ExitReason.LOST: ErrorState.UNKNOWN_ERROR,
    ExitReason.LAUNCHER_ERROR: ErrorState.ERROR_FATAL,
}


class ExitRecord(Frozen):
    """The structured facts about one ended task instance.

    `exit_code` is None when it is not known (never 0 by default); `signal` is the number of the
    signal that ended the command, if one did; `raw_state` is the backend's own word for the
    outcome (`OUT_OF_MEMORY`, `OOMKilled`, `TASK_LOST`…), kept for people and triage.
    """

    _fields = ("reason", "exit_code", "signal", "core_dumped", "raw_state", "message")
    __slots__ = _fields

    reason: ExitReason
    exit_code: int | None
    signal: int | None
    core_dumped: bool
    raw_state: str | None
    message: str

    def __init__(
        self,
        reason: ExitReason,
        exit_code: int | None = None,
        signal: int | None = None,
        core_dumped: bool = False,
        raw_state: str | None = None,
        message: str = "",
    ) -> None:
        put = object.__setattr__
        put(self, "reason", reason)
        put(self, "exit_code", exit_code)
        put(self, "signal", signal)
        put(self, "core_dumped", core_dumped)
        put(self, "raw_state", raw_state)
        put(self, "message", message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, the one reports and ledgers store."""
        return {
            "reason": self.reason.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "core_dumped": self.core_dumped,
            "raw_state": self.raw_state,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitRecord:
        """Read back what `to_dict` wrote; unknown keys are ignored for forward compatibility."""
        return cls(
            reason=ExitReason(data["reason"]),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            core_dumped=bool(data.get("core_dumped", False)),
            raw_state=data.get("raw_state"),
            message=str(data.get("message", "")),
        )


class RemoteExitInfo(Frozen):
    """What `ClusterDistributor.get_remote_exit_info` returns.

    It unpacks like Jobmon's `(error_state, error_message)` pair, so a Jobmon host can use it as
    it is. `finalized=False` says the backend's accounting may still change its answer: ask again
    later rather than act on it.
    """

    _fields = ("error_state", "error_message", "finalized", "record", "usage")
    __slots__ = _fields
    _unhashed = frozenset({"usage"})

    error_state: ErrorState
    error_message: str
    finalized: bool
    record: ExitRecord | None
    usage: Mapping[str, Any] | None
    """What the backend's accounting measured (`maxrss` bytes, `cpu` and `wallclock` seconds,
    `usage_str`), for hosts whose worker report never arrived; None when it measured nothing."""

    def __init__(
        self,
        error_state: ErrorState | str,
        error_message: str,
        finalized: bool = True,
        record: ExitRecord | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        put = object.__setattr__
        # Accept a bare letter from plugins written against Jobmon, and fail early on anything else.
        put(self, "error_state", ErrorState(error_state))
        put(self, "error_message", error_message)
        put(self, "finalized", finalized)
        put(self, "record", record)
        put(self, "usage", usage)

    def __iter__(self) -> Iterator[Any]:
        yield self.error_state
        yield self.error_message

    @classmethod
    def unknown(cls, message: str, *, finalized: bool = True) -> RemoteExitInfo:
        """The answer for an instance whose outcome cannot be told."""
        return cls(ErrorState.UNKNOWN_ERROR, message, finalized=finalized)
