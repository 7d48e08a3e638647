"""Read-only questions about the ledger, for `jobfleet status`, `usage` and `events`.

Every function takes a SQLAlchemy `Session` (a `Ledger.read_session()` is enough), never writes,
and returns frozen dataclasses (host/rows.py) whose `to_dict()` is JSON-ready: datetimes as ISO
8601 text, sizes in bytes as ints. Each is one or two statements whatever the size of the run,
shaped to use the ledger's indexes: `task_rows` with a small `limit` reads only the tasks of its
page and their latest instances, not every instance of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from jobfleet.core.host.ledger.engine import in_batches, safe_url
from jobfleet.core.host.ledger.models import (
    Cluster,
    Event,
    Run,
    RunCount,
    Task,
    TaskInstance,
    utcnow,
)
from jobfleet.core.host.ledger.states import FINAL_RUN_STATUSES, InstanceState, TaskState
from jobfleet.core.host.rows import (
    EventRow,
    NotFoundError,
    RunHighlights,
    RunSummary,
    TaskRow,
    UsageRow,
    memory_bytes,
    ordered,
    run_summary_of,
    task_row,
)
from jobfleet.core.resources import MIB

__all__ = [
    "FINAL_RUN_STATUSES",
    "NEAR_LIMIT",
    "OVER_REQUESTED",
    "RESOURCE_RETRIED",
    "EventRow",
    "NotFoundError",
    "RunHighlights",
    "RunSummary",
    "SessionStatus",
    "TaskRow",
    "UsageRow",
    "events",
    "find_instance",
    "find_run",
    "run_count",
    "run_highlights",
    "run_status",
    "run_summaries",
    "run_summary",
    "run_work_dir",
    "state_counts",
    "task_counts",
    "task_rows",
    "task_rows_statement",
    "usage_rows",
]

# Usage flags, in the order they are tried: the first that applies is the row's flag.
OVER_REQUESTED: Final = "over-requested"
RESOURCE_RETRIED: Final = "resource-retried"
NEAR_LIMIT: Final = "near limit"
# A request at least this many times the peak memory is wasteful…
OVER_REQUEST_FACTOR: Final = 2
# …unless it is this small anyway.
OVER_REQUEST_FLOOR: Final = 64 * MIB
# A peak at least this share of the request is close to being killed for memory.
NEAR_LIMIT_SHARE: Final = 0.9


# --- lookups --------------------------------------------------------------------------------


def _where(session: Session) -> str:
    return f"in the ledger at {safe_url(session.get_bind().engine.url)}"


def find_run(session: Session, ref: str | int) -> Run:
    """The run with id `ref`, or else the one run named exactly `ref`.

    A text of digits is tried as an id first, then as a name. Raises `NotFoundError` when there
    is no such run, or when several runs have the name (listing their ids).
    """
    digits = isinstance(ref, str) and ref.strip().isascii() and ref.strip().isdigit()
    run_id = ref if isinstance(ref, int) else int(ref) if digits else None
    if run_id is not None:
        run = session.get(Run, run_id)
        if run is not None:
            return run
        if isinstance(ref, int):
            raise NotFoundError(f"There is no run {ref} {_where(session)}.")
    name = str(ref)
    matches = session.scalars(select(Run).where(Run.name == name).order_by(Run.id)).all()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        what = f"run {name}" if run_id is not None else f"run named {name!r}"
        raise NotFoundError(f"There is no {what} {_where(session)}.")
    ids = ", ".join(str(run.id) for run in matches)
    raise NotFoundError(f"{len(matches)} runs are named {name!r}: use an id: {ids}.")


def run_count(session: Session) -> int:
    """How many runs the ledger holds."""
    return session.scalar(select(func.count()).select_from(Run)) or 0


def run_status(session: Session, run_id: int) -> str | None:
    """The run's status (a `RunStatus` value); None when there is no such run."""
    return session.scalar(select(Run.status).where(Run.id == run_id))


def run_work_dir(session: Session, run_id: int) -> str | None:
    """The directory of the run's channel and logs; None for a run made without one."""
    return session.scalar(select(Run.work_dir).where(Run.id == run_id))


def find_instance(session: Session, instance_id: int) -> TaskInstance:
    """The task instance with this id; `NotFoundError` when there is none."""
    instance = session.get(TaskInstance, instance_id)
    if instance is None:
        raise NotFoundError(f"There is no task instance {instance_id} {_where(session)}.")
    return instance


# --- runs -----------------------------------------------------------------------------------


def run_summaries(session: Session, *, limit: int = 50) -> list[RunSummary]:
    """The newest `limit` runs, newest first, with their task counts (one GROUP BY for all)."""
    statement = (
        select(Run, Cluster.name)
        .join(Cluster, Cluster.id == Run.cluster_id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return _summaries(session, [(run, cluster) for run, cluster in session.execute(statement)])


def run_summary(session: Session, run: Run) -> RunSummary:
    """The summary of one run (found with `find_run`)."""
    cluster = session.scalar(select(Cluster.name).where(Cluster.id == run.cluster_id)) or "?"
    return _summaries(session, [(run, cluster)])[0]


def _summaries(session: Session, runs: Sequence[tuple[Run, str]]) -> list[RunSummary]:
    if not runs:
        return []
    counts: dict[int, dict[str, int]] = {}
    # Counts kept by the database (run_counts), not a count over every task of each run.
    for batch in in_batches(run.id for run, _ in runs):
        rows = session.execute(
            select(RunCount.run_id, RunCount.state, RunCount.n).where(
                RunCount.run_id.in_(batch), RunCount.kind == "task"
            )
        )
        for run_id, state, count in rows:
            counts.setdefault(run_id, {})[state] = count
    now = utcnow()
    return [run_summary_of(run, cluster, counts.get(run.id, {}), now) for run, cluster in runs]


def state_counts(session: Session, run_id: int) -> dict[str, int]:
    """How many of the run's instances are in each state letter, in the table's order.

    Letters with no instance are left out.
    """
    return ordered(_counts(session, run_id, "instance"), [state.value for state in InstanceState])


def task_counts(session: Session, run_id: int) -> dict[str, int]:
    """How many of the run's tasks are in each `TaskState`; states with none are left out."""
    return ordered(_counts(session, run_id, "task"), [state.value for state in TaskState])


def _counts(session: Session, run_id: int, kind: str) -> dict[str, int]:
    """One run's counts per state, as the database keeps them (one small index range)."""
    rows = session.execute(
        select(RunCount.state, RunCount.n).where(RunCount.run_id == run_id, RunCount.kind == kind)
    )
    return {state: int(n) for state, n in rows}


class SessionStatus:
    """The questions of `jobfleet status` (`rows.StatusSource`) asked through a session.

    `host/quick_read.py` asks the same ones of a SQLite ledger without SQLAlchemy.
    """

    def __init__(self, session: Session, where: str) -> None:
        self.session = session
        self.where = where

    def run_count(self) -> int:
        return run_count(self.session)

    def run_summaries(self, limit: int) -> list[RunSummary]:
        return run_summaries(self.session, limit=limit)

    def find_run_summary(self, ref: str) -> RunSummary:
        return run_summary(self.session, find_run(self.session, ref))

    def state_counts(self, run_id: int) -> dict[str, int]:
        return state_counts(self.session, run_id)

    def task_rows(self, run_id: int, limit: int | None) -> list[TaskRow]:
        return task_rows(self.session, run_id, limit=limit)

    def scaler_view(self, run_id: int) -> dict[str, Any] | None:
        run = self.session.get(Run, run_id)
        view = None if run is None else (run.options or {}).get("scaler_view")
        return dict(view) if isinstance(view, dict) else None


# --- tasks ----------------------------------------------------------------------------------


def _json_text(column: Any, key: str) -> ColumnElement[str]:
    """A text value inside a JSON column (None when absent), on SQLite and PostgreSQL."""
    value: ColumnElement[str] = column[key].as_string()
    return value


def task_rows_statement(
    run_id: int,
    *,
    limit: int | None = None,
    offset: int = 0,
    task_states: Sequence[str] | None = None,
) -> Select[tuple[Any, ...]]:
    """The statement behind `task_rows` (exposed so that tests can `EXPLAIN` it)."""
    page_query = (
        select(Task.id, Task.name, Task.state).where(Task.run_id == run_id).order_by(Task.id)
    )
    if task_states is not None:
        page_query = page_query.where(Task.state.in_(task_states))
    if limit is not None:
        page_query = page_query.limit(limit)
    if offset:
        page_query = page_query.offset(offset)
    page = page_query.cte("page")
    # The latest attempt of each task of the page: max(attempt) per task_id, read from the
    # unique (task_id, attempt) index for the page's tasks only.
    latest = (
        select(TaskInstance.task_id, func.max(TaskInstance.attempt).label("attempt"))
        .where(TaskInstance.task_id.in_(select(page.c.id)))
        .group_by(TaskInstance.task_id)
        .subquery("latest")
    )
    return (
        select(
            page.c.id,
            page.c.name,
            page.c.state,
            TaskInstance.id,
            TaskInstance.state,
            TaskInstance.attempt,
            _json_text(TaskInstance.exit_record, "reason"),
            TaskInstance.wallclock,
            TaskInstance.maxrss,
            TaskInstance.cpu,
            _json_text(TaskInstance.requested_resources, "memory"),
            TaskInstance.hostname,
        )
        .select_from(page)
        .outerjoin(latest, latest.c.task_id == page.c.id)
        .outerjoin(
            TaskInstance,
            and_(
                TaskInstance.task_id == latest.c.task_id, TaskInstance.attempt == latest.c.attempt
            ),
        )
        .order_by(page.c.id)
    )


def task_rows(
    session: Session,
    run_id: int,
    *,
    limit: int | None = None,
    offset: int = 0,
    task_states: Sequence[str] | None = None,
) -> list[TaskRow]:
    """The run's tasks in id order (only those in `task_states`, if given), each with its
    latest instance, in one statement.

    The page of tasks is chosen first (through the `tasks.run_id` index); only those tasks'
    instances are then read, through the unique (task_id, attempt) index: a page of 20 tasks
    costs the same in a run of a million instances as in a run of a hundred.
    """
    statement = task_rows_statement(run_id, limit=limit, offset=offset, task_states=task_states)
    return _task_rows(session, statement)


def _task_rows(session: Session, statement: Select[tuple[Any, ...]]) -> list[TaskRow]:
    return [task_row(columns) for columns in session.execute(statement)]


def run_highlights(session: Session, run_id: int, *, limit: int = 10) -> RunHighlights:
    """The run's highlights: a bounded number of rows, read by four statements whatever the
    size of the run (the rankings sort the run's latest attempts in the database)."""
    not_done = [state.value for state in TaskState if state is not TaskState.DONE]
    counts = task_counts(session, run_id)
    every = task_rows_statement(run_id)
    task_id = every.selected_columns[0]

    def top(column: Any) -> tuple[TaskRow, ...]:
        ranked = every.where(column.is_not(None)).order_by(None).order_by(column.desc(), task_id)
        return tuple(_task_rows(session, ranked.limit(limit)))

    return RunHighlights(
        not_done=tuple(task_rows(session, run_id, limit=limit, task_states=not_done)),
        not_done_total=sum(counts.get(state, 0) for state in not_done),
        slowest=top(TaskInstance.wallclock),
        hungriest=top(TaskInstance.maxrss),
    )


# --- usage ----------------------------------------------------------------------------------


def usage_rows(session: Session, run_id: int) -> list[UsageRow]:
    """Per task (in id order), its latest instance with usage (maxrss recorded), flagged.

    The flag is the first that applies of: `OVER_REQUESTED` (the request is at least twice
    the peak memory and at least 64 MiB), `RESOURCE_RETRIED` (an earlier attempt ended in Z),
    `NEAR_LIMIT` (the peak is at least 90% of the request). Tasks without usage are left out.
    One statement, read in order of (task, attempt).
    """
    statement = (
        select(
            Task.id,
            Task.name,
            TaskInstance.id,
            TaskInstance.attempt,
            TaskInstance.state,
            _json_text(TaskInstance.requested_resources, "memory"),
            TaskInstance.maxrss,
            TaskInstance.cpu,
            TaskInstance.wallclock,
        )
        .join(Task, Task.id == TaskInstance.task_id)
        .where(TaskInstance.run_id == run_id)
        .order_by(TaskInstance.task_id, TaskInstance.attempt)
        .execution_options(yield_per=5000)
    )
    rows: list[UsageRow] = []
    current: list[Any] = []
    for row in session.execute(statement):
        if current and current[0][0] != row[0]:
            _add_usage(rows, current)
            current = []
        current.append(row)
    if current:
        _add_usage(rows, current)
    return rows


def _add_usage(rows: list[UsageRow], attempts: list[Any]) -> None:
    with_usage = [row for row in attempts if row[6] is not None]
    if not with_usage:
        return
    task_id, name, instance_id, attempt, state, memory, maxrss, cpu, wallclock = with_usage[-1]
    requested = memory_bytes(memory)
    retried = any(row[4] == InstanceState.RESOURCE_ERROR and row[3] < attempt for row in attempts)
    rows.append(
        UsageRow(
            task_id=task_id,
            name=name,
            instance_id=instance_id,
            attempt=attempt,
            attempts=attempts[-1][3],
            state=state,
            requested_memory=requested,
            maxrss=maxrss,
            cpu=cpu,
            wallclock=wallclock,
            memory_by_attempt=tuple(row[5] for row in attempts),
            flag=_usage_flag(requested, maxrss, retried),
        )
    )


def _usage_flag(requested: int | None, maxrss: int, retried: bool) -> str | None:
    if (
        requested is not None
        and requested >= OVER_REQUEST_FLOOR
        and requested >= OVER_REQUEST_FACTOR * maxrss
    ):
        return OVER_REQUESTED
    if retried:
        return RESOURCE_RETRIED
    if requested is not None and maxrss >= NEAR_LIMIT_SHARE * requested:
        return NEAR_LIMIT
    return None


# --- events ---------------------------------------------------------------------------------


def events(
    session: Session,
    run_id: int,
    *,
    after_id: int = 0,
    instance_id: int | None = None,
    limit: int | None = None,
) -> list[EventRow]:
    """The run's events with an id above `after_id`, in id order (the `(run_id, id)` index).

    `instance_id` keeps only the events of that instance; `limit` caps how many are returned,
    so that a caller can page through a long log by passing the last id it got.
    """
    statement = (
        select(Event, TaskInstance.task_id, TaskInstance.attempt, Task.name)
        .outerjoin(TaskInstance, TaskInstance.id == Event.task_instance_id)
        .outerjoin(Task, Task.id == TaskInstance.task_id)
        .where(Event.run_id == run_id, Event.id > after_id)
        .order_by(Event.id)
    )
    if instance_id is not None:
        statement = statement.where(Event.task_instance_id == instance_id)
    if limit is not None:
        statement = statement.limit(limit)
    return [
        EventRow(
            id=event.id,
            run_id=event.run_id,
            at=event.at,
            kind=event.kind,
            instance_id=event.task_instance_id,
            task_id=task_id,
            task_name=task_name,
            attempt=attempt,
            from_state=event.from_state,
            to_state=event.to_state,
            message=event.message,
            details=dict(event.details or {}),
        )
        for event, task_id, attempt, task_name in session.execute(statement)
    ]
