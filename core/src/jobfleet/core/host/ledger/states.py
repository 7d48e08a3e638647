"""Task instance states (Jobmon's letters) and the one table of allowed transitions.

Every state change of a task instance goes through `check_transition`; nothing else in the
ledger decides which moves are legal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class InstanceState(enum.StrEnum):
    """The state of one task instance (one attempt of a task), with Jobmon's letters."""

    QUEUED = "Q"
    """Created, waiting to be grouped and submitted."""
    INSTANTIATED = "I"
    """Picked for a submission (given an array and step); not yet accepted by the backend."""
    LAUNCHED = "O"
    """Accepted by the backend: it has a distributor id."""
    RUNNING = "R"
    """The worker node said it started."""
    DONE = "D"
    """Finished with success. Terminal."""
    ERROR_RECOVERABLE = "E"
    """The command failed; ends the attempt (a plain retry may follow)."""
    RESOURCE_ERROR = "Z"
    """Killed for memory or runtime; ends the attempt (a retry with scaled resources may follow)."""
    UNKNOWN_ERROR = "U"
    """Outcome unknown (lost node, missing report); ends the attempt (a retry may follow)."""
    NO_DISTRIBUTOR_ID = "W"
    """The backend did not accept the submission; ends the attempt."""
    TRIAGING = "T"
    """Was running, then went silent: the backend is being asked what happened."""
    NO_HEARTBEAT = "X"
    """Launched, but never heard from by its deadline: the backend is being asked."""
    KILL_SELF = "K"
    """Killed on the host's request. Terminal."""
    ERROR_FATAL = "F"
    """Failed in a way no retry can help. Terminal."""

    @property
    def is_final(self) -> bool:
        """Whether the instance can never change state again (its attempt is over)."""
        return not TRANSITIONS[self]

    @property
    def is_active(self) -> bool:
        """Whether the instance still holds (or may hold) a slot on the backend."""
        return self in ACTIVE_STATES


S = InstanceState

# Outcomes a worker report or a triage answer can give.
_OUTCOMES: Final = frozenset(
    {S.DONE, S.ERROR_RECOVERABLE, S.RESOURCE_ERROR, S.UNKNOWN_ERROR, S.ERROR_FATAL, S.KILL_SELF}
)

TRANSITIONS: Final[Mapping[InstanceState, frozenset[InstanceState]]] = MappingProxyType(
    {
        S.QUEUED: frozenset({S.INSTANTIATED, S.KILL_SELF}),
        # F: the queue refused the resources outright (they can never run there).
        S.INSTANTIATED: frozenset({S.LAUNCHED, S.NO_DISTRIBUTOR_ID, S.KILL_SELF, S.ERROR_FATAL}),
        # A fast task's final report (or a triage answer) may arrive before its running report.
        S.LAUNCHED: frozenset({S.RUNNING, S.NO_HEARTBEAT} | _OUTCOMES),
        S.RUNNING: frozenset({S.TRIAGING} | _OUTCOMES),
        # A late heartbeat brings a silent instance back to R; otherwise triage gives an outcome.
        S.TRIAGING: frozenset({S.RUNNING} | _OUTCOMES),
        S.NO_HEARTBEAT: frozenset({S.RUNNING} | _OUTCOMES),
        # An attempt that ended is never reopened: a retry is a new instance.
        S.DONE: frozenset(),
        S.ERROR_RECOVERABLE: frozenset(),
        S.RESOURCE_ERROR: frozenset(),
        S.UNKNOWN_ERROR: frozenset(),
        S.NO_DISTRIBUTOR_ID: frozenset(),
        S.KILL_SELF: frozenset(),
        S.ERROR_FATAL: frozenset(),
    }
)

ACTIVE_STATES: Final = frozenset(
    {S.INSTANTIATED, S.LAUNCHED, S.RUNNING, S.TRIAGING, S.NO_HEARTBEAT}
)
# States that end an attempt and allow a new one (within the task's max_attempts).
RETRYABLE_STATES: Final = frozenset(
    {S.ERROR_RECOVERABLE, S.RESOURCE_ERROR, S.UNKNOWN_ERROR, S.NO_DISTRIBUTOR_ID}
)
# States after which the task itself is over, whatever its attempt budget.
TERMINAL_STATES: Final = frozenset({S.DONE, S.KILL_SELF, S.ERROR_FATAL})


def check_transition(from_state: InstanceState, to_state: InstanceState) -> str | None:
    """Why the move is forbidden, or None when the table allows it."""
    if from_state == to_state:
        return "it is already in that state"
    if not TRANSITIONS[from_state]:
        return f"{from_state.name} ends the attempt; a retry is a new task instance"
    if to_state not in TRANSITIONS[from_state]:
        allowed = " ".join(sorted(TRANSITIONS[from_state]))
        return f"from {from_state.name} only {allowed} are allowed"
    return None


class RunStatus(enum.StrEnum):
    """The status of a run as a whole."""

    CREATED = "created"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    KILLED = "killed"


# The statuses after which a run never changes again.
FINAL_RUN_STATUSES: Final = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.KILLED})


class TaskState(enum.StrEnum):
    """Whether a task is still being worked on, and how it ended."""

    PENDING = "pending"
    """It has an instance that is queued or active, or the service is about to retry it."""
    DONE = "done"
    FAILED = "failed"
    """Its last attempt failed and no retry can follow (fatal, out of attempts, cannot scale)."""
    KILLED = "killed"
