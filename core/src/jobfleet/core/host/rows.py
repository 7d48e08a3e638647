"""What the ledger's read-only questions answer: frozen rows whose `to_dict()` is JSON-ready.

`host/queries.py` builds them with SQLAlchemy; `host/quick_read.py` builds `RunSummary` and
`TaskRow` with the stdlib's `sqlite3` for `jobfleet status` of a SQLite ledger. The command line
renders them alike, whichever built them. Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from jobfleet.core.errors import JobfleetError, ResourceError
from jobfleet.core.host.ledger.owners import lease_is_live, lease_is_orphaned
from jobfleet.core.host.ledger.states import TaskState
from jobfleet.core.resources import parse_memory

__all__ = [
    "EventRow",
    "NotFoundError",
    "RunHighlights",
    "RunSummary",
    "StatusSource",
    "TaskRow",
    "UsageRow",
    "memory_bytes",
    "ordered",
    "run_summary_of",
    "task_row",
]


class NotFoundError(JobfleetError, LookupError):
    """A run or task instance asked for is not in the ledger (or its name is ambiguous)."""


# --- result rows ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, _Row):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


class _Row:
    """`to_dict()` for the frozen dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict: datetimes in ISO 8601, tuples as lists."""
        assert dataclasses.is_dataclass(self)
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


@dataclass(frozen=True)
class RunSummary(_Row):
    """One run with its task counts and owner, as `jobfleet status` lists it."""

    id: int
    name: str
    cluster: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    tasks_killed: int
    tasks_pending: int
    owner_token: str | None
    lease_expires_at: datetime | None
    owner_active: bool
    """Whether a live service holds an unexpired lease on the run (is working on it now)."""
    owner_orphaned: bool
    """Whether the lease is unexpired but its owner, a service of this machine, is dead:
    nobody drives the run (`jobfleet run --resume` finishes it, `jobfleet kill` kills it)."""

    def task_counts(self) -> dict[str, int]:
        """Tasks per state, as `task_counts` gives them (states with none left out)."""
        counts = {
            TaskState.PENDING.value: self.tasks_pending,
            TaskState.DONE.value: self.tasks_done,
            TaskState.FAILED.value: self.tasks_failed,
            TaskState.KILLED.value: self.tasks_killed,
        }
        return ordered(counts, [state.value for state in TaskState])


@dataclass(frozen=True)
class TaskRow(_Row):
    """One task and its latest attempt (instance); instance fields are None before any."""

    task_id: int
    name: str
    task_state: str
    instance_id: int | None
    instance_state: str | None
    attempts: int
    """The latest attempt's number: how many attempts the task has had so far."""
    exit_reason: str | None
    wallclock: float | None
    maxrss: int | None
    cpu: float | None
    requested_memory: int | None
    """Bytes, read from the latest instance's requested resources."""
    hostname: str | None


@dataclass(frozen=True)
class UsageRow(_Row):
    """A task's latest instance that reported usage, against what it requested."""

    task_id: int
    name: str
    instance_id: int
    attempt: int
    """The attempt whose usage this is."""
    attempts: int
    """How many attempts the task has had (a later one may not have reported usage yet)."""
    state: str
    requested_memory: int | None
    maxrss: int
    cpu: float | None
    wallclock: float | None
    memory_by_attempt: tuple[str | None, ...]
    """The memory each attempt requested, as written in the ledger ("100M", "150M")."""
    flag: str | None
    """`OVER_REQUESTED`, `RESOURCE_RETRIED`, `NEAR_LIMIT` or None."""


@dataclass(frozen=True)
class EventRow(_Row):
    """One entry of a run's event log, with the task and attempt it is about (if any)."""

    id: int
    run_id: int
    at: datetime
    kind: str
    instance_id: int | None
    task_id: int | None
    task_name: str | None
    attempt: int | None
    from_state: str | None
    to_state: str | None
    message: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class RunHighlights(_Row):
    """What a large run's final summary shows instead of every task: the tasks that did not
    end done, the slowest and the hungriest (by their latest attempt), at most `limit` each."""

    not_done: tuple[TaskRow, ...]
    """The first tasks (in id order) that failed, were killed or are still pending."""
    not_done_total: int
    slowest: tuple[TaskRow, ...]
    """By wall-clock time, longest first."""
    hungriest: tuple[TaskRow, ...]
    """By peak memory (maxrss), largest first."""


def ordered(counts: Mapping[str, int], order: Iterable[str]) -> dict[str, int]:
    """The non-zero counts, in the order of `order`; unknown keys last, sorted."""
    known = list(order)
    # Values the enums do not know (written by a newer jobfleet) come last, not lost.
    keys = [key for key in known if key in counts] + sorted(set(counts) - set(known))
    return {key: int(counts[key]) for key in keys if counts[key]}


def memory_bytes(value: object) -> int | None:
    """Bytes of a memory value written in requested resources ("1536M"); None if unreadable."""
    if value is None:
        return None
    try:
        return parse_memory(value)
    except ResourceError:
        return None


# --- built the same way by both readers -----------------------------------------------------


class RunRecord(Protocol):
    """A `runs` row as far as a summary needs it (the ORM's `Run`, or a plain row)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def owner_token(self) -> str | None: ...
    @property
    def lease_expires_at(self) -> datetime | None: ...


def run_summary_of(
    run: RunRecord, cluster: str, tasks: Mapping[str, int], now: datetime
) -> RunSummary:
    """The summary of a run, from its row, its cluster's name and its task counts per state."""
    return RunSummary(
        id=run.id,
        name=run.name,
        cluster=cluster,
        status=run.status,
        created_at=run.created_at,
        finished_at=run.finished_at,
        tasks_total=sum(tasks.values()),
        tasks_done=tasks.get(TaskState.DONE, 0),
        tasks_failed=tasks.get(TaskState.FAILED, 0),
        tasks_killed=tasks.get(TaskState.KILLED, 0),
        tasks_pending=tasks.get(TaskState.PENDING, 0),
        owner_token=run.owner_token,
        lease_expires_at=run.lease_expires_at,
        owner_active=lease_is_live(run, now),
        owner_orphaned=lease_is_orphaned(run, now),
    )


def task_row(columns: Sequence[Any]) -> TaskRow:
    """A `TaskRow` from the twelve columns `task_rows` selects, in their order: task id, name,
    state; the latest instance's id, state, attempt, exit reason, wallclock, maxrss, cpu,
    requested memory (as written) and hostname."""
    (task_id, name, task_state, instance_id, state, attempt, reason, wallclock, maxrss, cpu,
     memory, hostname) = columns  # fmt: skip
    return TaskRow(
        task_id=task_id,
        name=name,
        task_state=task_state,
        instance_id=instance_id,
        instance_state=state,
        attempts=attempt or 0,
        exit_reason=reason,
        wallclock=wallclock,
        maxrss=maxrss,
        cpu=cpu,
        requested_memory=memory_bytes(memory),
        hostname=hostname,
    )


class StatusSource(Protocol):
    """The questions `jobfleet status` asks: `queries.SessionStatus` answers them through
    SQLAlchemy, `quick_read.QuickReader` with the stdlib's sqlite3 (a SQLite ledger only)."""

    @property
    def where(self) -> str:
        """The ledger's URL, password hidden, as messages show it."""
        ...

    def run_count(self) -> int: ...

    def run_summaries(self, limit: int) -> list[RunSummary]:
        """The newest `limit` runs, newest first."""
        ...

    def find_run_summary(self, ref: str) -> RunSummary:
        """The summary of the run `ref` names (an id, or else a name); `NotFoundError` if none
        or several."""
        ...

    def state_counts(self, run_id: int) -> dict[str, int]: ...

    def task_rows(self, run_id: int, limit: int | None) -> list[TaskRow]: ...

    def scaler_view(self, run_id: int) -> dict[str, Any] | None:
        """The autoscaler's last view of the run's nodes (`runs.options["scaler_view"]`), or
        None when the run does not autoscale."""
        ...
