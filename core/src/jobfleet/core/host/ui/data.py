"""What the web pages show, read from the ledger through a read-only session.

Every question costs a bounded amount whatever the size of the run: counts come from
`run_counts` (kept by triggers), lists are pages (`LIMIT`) read through the ledger's indexes,
and the plots and timeline are drawn from the attempts of at most `SAMPLE` tasks, picked evenly
over the run's task ids by index probes (a run with at most `SAMPLE` instances is drawn whole,
exactly).
The pages say when they show a sample.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Select, and_, exists, func, select, text
from sqlalchemy.orm import Session, aliased

from jobfleet.core.host import queries
from jobfleet.core.host.ledger.engine import in_batches
from jobfleet.core.host.ledger.models import Cluster, Event, Run, RunCount, Task, TaskInstance
from jobfleet.core.host.ledger.states import InstanceState, RunStatus, TaskState
from jobfleet.core.host.rows import NotFoundError, RunSummary, TaskRow, memory_bytes, task_row
from jobfleet.core.resources import parse_runtime

# Instances the plots and the timeline read at most.
SAMPLE: Final = 2000
# Rows per page of the runs and tasks lists.
RUNS_PAGE: Final = 50
TASKS_PAGE: Final = 50
# Bytes of a log read for its tail on the task page.
TAIL_BYTES: Final = 16 * 1024
TAIL_LINES: Final = 40

FAILED_STATES: Final = tuple(
    state.value
    for state in (
        InstanceState.ERROR_RECOVERABLE,
        InstanceState.RESOURCE_ERROR,
        InstanceState.UNKNOWN_ERROR,
        InstanceState.NO_DISTRIBUTOR_ID,
        InstanceState.ERROR_FATAL,
        InstanceState.KILL_SELF,
    )
)
RUN_STATUSES: Final = tuple(status.value for status in RunStatus)
TASK_STATES: Final = tuple(state.value for state in TaskState)
# Columns the tasks page sorts by: the task's own (read through its index, page first) and the
# latest attempt's (which rank every task of the run: one pass over its instances).
TASK_SORTS: Final = ("id", "name", "state", "wallclock", "maxrss")
# The latest attempt's columns among them, each read through its (run_id, column) index.
USAGE_SORTS: Final = {"wallclock": TaskInstance.wallclock, "maxrss": TaskInstance.maxrss}
_DIGITS = re.compile(r"\d+")


def name_pattern(name: str) -> str:
    """The kind of task a name belongs to: its digit runs as `#` ("align-17" -> "align-#")."""
    return _DIGITS.sub("#", name)


# --- runs -----------------------------------------------------------------------------------


def run_list(
    session: Session, *, status: str | None, name: str | None, limit: int = RUNS_PAGE
) -> list[RunSummary]:
    """The newest runs (newest first), only those in `status` and whose name holds `name`."""
    statement = (
        select(Run, Cluster.name)
        .join(Cluster, Cluster.id == Run.cluster_id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    if status:
        statement = statement.where(Run.status == status)
    if name:
        statement = statement.where(Run.name.like(f"%{_like_escaped(name)}%", escape="\\"))
    runs = [(run, cluster) for run, cluster in session.execute(statement)]
    return [queries.run_summary(session, run) for run, _ in runs]


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"There is no run {run_id} in this ledger.")
    return run


# --- one run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampledInstance:
    """What the plots and the timeline need of one instance."""

    id: int
    task_id: int
    name: str
    attempt: int
    state: str
    requested_memory: int | None
    requested_runtime: int | None
    cores: float | None
    maxrss: int | None
    cpu: float | None
    wallclock: float | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class Sample:
    instances: tuple[SampledInstance, ...]
    total: int
    """How many instances the run has: the sample is exact when it holds them all."""

    @property
    def exact(self) -> bool:
        return len(self.instances) >= self.total


def instance_total(session: Session, run_id: int) -> int:
    counts = session.execute(
        select(func.coalesce(func.sum(RunCount.n), 0)).where(
            RunCount.run_id == run_id, RunCount.kind == "instance"
        )
    ).scalar()
    return int(counts or 0)


def _sample_columns() -> Select[tuple[Any, ...]]:
    return select(
        TaskInstance.id,
        TaskInstance.task_id,
        Task.name,
        TaskInstance.attempt,
        TaskInstance.state,
        TaskInstance.requested_resources,
        TaskInstance.maxrss,
        TaskInstance.cpu,
        TaskInstance.wallclock,
        TaskInstance.created_at,
        TaskInstance.started_at,
        TaskInstance.ended_at,
    ).join(Task, Task.id == TaskInstance.task_id)


def sample_instances(session: Session, run_id: int, size: int = SAMPLE) -> Sample:
    """The run's instances, or `size` of them evenly spread over its instance ids."""
    total = instance_total(session, run_id)
    base = _sample_columns().where(TaskInstance.run_id == run_id)
    if total <= size:
        rows = list(session.execute(base.order_by(TaskInstance.id)))
    else:
        # Every attempt of `size` tasks spread evenly over the run's task ids: the first and
        # last ids are two index lookups (min and max asked apart, each answered from the end
        # of the `tasks.run_id` index), then primary-key and (task_id, attempt) probes.
        low = session.scalar(select(func.min(Task.id)).where(Task.run_id == run_id)) or 0
        high = session.scalar(select(func.max(Task.id)).where(Task.run_id == run_id)) or 0
        step = max(1.0, (high - low) / max(1, size - 1))
        wanted = sorted({int(low + round(i * step)) for i in range(size)} | {high})
        rows = []
        for batch in in_batches(wanted):
            rows.extend(session.execute(base.where(TaskInstance.task_id.in_(batch))))
        rows.sort(key=lambda row: row[0])
    return Sample(tuple(_sampled(row) for row in rows), total)


def _sampled(row: Sequence[Any]) -> SampledInstance:
    (instance_id, task_id, name, attempt, state, requested, maxrss, cpu, wallclock, created,
     started, ended) = row  # fmt: skip
    resources = requested or {}
    return SampledInstance(
        id=instance_id,
        task_id=task_id,
        name=name,
        attempt=attempt,
        state=state,
        requested_memory=_memory(resources.get("memory")),
        requested_runtime=_runtime(resources.get("runtime")),
        cores=_number(resources.get("cores")),
        maxrss=maxrss,
        cpu=cpu,
        wallclock=wallclock,
        created_at=created,
        started_at=started,
        ended_at=ended,
    )


# A run's requests take few distinct values: each is read once (parsing is the costly part of
# drawing a sample of thousands of attempts).
@lru_cache(maxsize=1024)
def _memory(value: str | int | None) -> int | None:
    return memory_bytes(value)


def _runtime(value: object) -> int | None:
    if value is None or not isinstance(value, str | int):
        return None
    return _cached_runtime(value)


@lru_cache(maxsize=1024)
def _cached_runtime(value: str | int) -> int | None:
    try:
        return parse_runtime(value)
    except Exception:  # a value this jobfleet cannot read: left out of the plot
        return None


def _number(value: object) -> float | None:
    try:
        return None if value is None else float(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class FailureGroup:
    reason: str
    count: int
    """Among the attempts examined (all of them when `Failures.exact`)."""
    examples: tuple[dict[str, Any], ...]
    """The newest failed attempts: instance and task ids, task name, state, exit code,
    signal and message."""


@dataclass(frozen=True)
class Failures:
    groups: tuple[FailureGroup, ...]
    examined: int
    total: int
    """How many of the run's attempts failed (the ledger's counts: exact)."""

    @property
    def exact(self) -> bool:
        return self.examined >= self.total


# Failed attempts examined per failure state: their exit records are read one row at a time.
FAILURES_EXAMINED: Final = 2000


def failures(session: Session, run_id: int, *, examples: int = 5) -> Failures:
    """The run's failed attempts grouped by exit reason, most frequent first, with examples.

    For each failed state, its newest `FAILURES_EXAMINED` attempts are read, through the
    (run_id, state) index walked backwards: a run with a hundred thousand failures costs
    what one with a few thousand does (their total comes from the ledger's counts).
    """
    counts = queries.state_counts(session, run_id)
    groups: dict[str, list[Any]] = {}
    tallies: Counter[str] = Counter()
    examined = 0
    for state in FAILED_STATES:
        if not counts.get(state):
            continue
        rows = session.execute(
            select(TaskInstance.id, TaskInstance.task_id, TaskInstance.state,
                   TaskInstance.attempt, TaskInstance.exit_record)
            .where(TaskInstance.run_id == run_id, TaskInstance.state == state)
            .order_by(TaskInstance.id.desc())
            .limit(FAILURES_EXAMINED)
        ).all()  # fmt: skip
        examined += len(rows)
        for row in rows:
            reason = str((row.exit_record or {}).get("reason") or "unknown")
            tallies[reason] += 1
            kept = groups.setdefault(reason, [])
            if len(kept) < examples:
                kept.append(row)
    shown = [row.task_id for kept in groups.values() for row in kept]
    names = dict(session.execute(select(Task.id, Task.name).where(Task.id.in_(shown))).all())
    result = []
    for reason, count in tallies.most_common():
        kept = sorted(groups[reason], key=lambda row: -row.id)
        result.append(
            FailureGroup(
                reason=reason,
                count=count,
                examples=tuple(
                    {
                        "instance_id": row.id,
                        "task_id": row.task_id,
                        "name": names.get(row.task_id, "?"),
                        "state": row.state,
                        "attempt": row.attempt,
                        "exit_code": (row.exit_record or {}).get("exit_code"),
                        "signal": (row.exit_record or {}).get("signal"),
                        "message": str((row.exit_record or {}).get("message") or ""),
                    }
                    for row in kept
                ),
            )
        )
    total = sum(counts.get(state, 0) for state in FAILED_STATES)
    return Failures(tuple(result), examined, total)


def ranked(session: Session, run_id: int, column: Any, limit: int = 10) -> list[TaskRow]:
    """The run's attempts with the largest `column` (wallclock or maxrss), largest first."""
    statement = (
        select(
            Task.id, Task.name, Task.state, TaskInstance.id, TaskInstance.state,
            TaskInstance.attempt, TaskInstance.exit_record["reason"].as_string(),
            TaskInstance.wallclock, TaskInstance.maxrss, TaskInstance.cpu,
            TaskInstance.requested_resources["memory"].as_string(), TaskInstance.hostname,
        )
        .join(Task, Task.id == TaskInstance.task_id)
        .where(TaskInstance.run_id == run_id, column.is_not(None))
        # Ties newest first: the order of a backward walk of the (run_id, column) index.
        .order_by(column.desc(), TaskInstance.id.desc())
        .limit(limit)
    )  # fmt: skip
    return [task_row(columns) for columns in session.execute(statement)]


def adjustments(session: Session, run_id: int, limit: int = 20) -> tuple[list[Any], int]:
    """The run's newest resource adjustments (events of kind "adjustment") and their count."""
    # `kind != 'transition'` as written in the partial index ix_events_notes, so that the
    # database reads only the run's few events that are not transitions.
    where = and_(Event.run_id == run_id, text("kind != 'transition'"), Event.kind == "adjustment")
    rows = session.execute(
        select(Event.id, Event.at, Event.message, Event.task_instance_id)
        .where(where)
        .order_by(Event.id.desc())
        .limit(limit)
    ).all()
    total = session.scalar(select(func.count()).select_from(Event).where(where)) or 0
    return list(rows), int(total)


def retries(session: Session, run_id: int, limit: int = 20) -> list[Any]:
    """The run's newest retried attempts (attempt > 1), with the task's name."""
    return list(
        session.execute(
            select(TaskInstance.id, TaskInstance.task_id, Task.name, TaskInstance.attempt,
                   TaskInstance.state, TaskInstance.requested_resources)
            .join(Task, Task.id == TaskInstance.task_id)
            # `attempt > 1` as written in the partial index ix_task_instances_retries.
            .where(TaskInstance.run_id == run_id, text("attempt > 1"))
            .order_by(TaskInstance.id.desc())
            .limit(limit)
        )
    )  # fmt: skip


# --- tasks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskQuery:
    """The tasks page's filter, sort and page, as read from its URL."""

    state: str | None = None
    name: str | None = None
    sort: str = "id"
    descending: bool = False
    page: int = 1
    per_page: int = TASKS_PAGE


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskRow]
    has_next: bool
    total: int | None
    """How many tasks match, when the ledger's counts tell it (no name filter)."""


def task_page(session: Session, run_id: int, query: TaskQuery) -> TaskPage:
    """One page of the run's tasks with their latest attempts.

    Sorted by a column of the task (id, name, state), the page is chosen first through a
    `tasks` index on (run_id, column) (indexed LIMIT/OFFSET) and only its tasks' attempts are
    read. Sorted by a usage column of the latest attempt (wallclock, maxrss), the run's
    attempts are walked in that column's order through its (run_id, column) index, keeping
    the latest attempt of each task; tasks whose latest attempt has no value yet are not
    listed then. One row more than the page is read, to know whether a next page exists:
    never a count of the matches.
    """
    if query.sort not in TASK_SORTS:
        raise ValueError(f"sort must be one of {', '.join(TASK_SORTS)}, not {query.sort!r}")
    offset = (query.page - 1) * query.per_page
    columns = _task_row_columns()
    if query.sort in USAGE_SORTS:
        column = USAGE_SORTS[query.sort]
        later = aliased(TaskInstance)
        statement = (
            select(Task.id, Task.name, Task.state, *columns)
            .select_from(TaskInstance)
            .join(Task, Task.id == TaskInstance.task_id)
            .where(
                TaskInstance.run_id == run_id,
                column.is_not(None),
                ~exists().where(later.task_id == TaskInstance.task_id,
                                later.attempt > TaskInstance.attempt),
            )
            .order_by(*(
                (column.desc(), TaskInstance.id.desc()) if query.descending
                else (column.asc(), TaskInstance.id.asc())
            ))
        )  # fmt: skip
        statement = _task_filters(statement, query)
    else:
        own = {"id": Task.id, "name": Task.name, "state": Task.state}[query.sort]
        order: tuple[Any, ...] = (
            (own.desc(), Task.id.desc()) if query.descending else (own.asc(), Task.id.asc())
        )
        if query.sort == "id":
            order = order[:1]
        tasks = _task_filters(
            select(Task.id, Task.name, Task.state).where(Task.run_id == run_id), query
        )
        page = tasks.order_by(*order).limit(query.per_page + 1).offset(offset).cte("page")
        latest = (
            select(TaskInstance.task_id, func.max(TaskInstance.attempt).label("attempt"))
            .where(TaskInstance.task_id.in_(select(page.c.id)))
            .group_by(TaskInstance.task_id)
            .subquery("latest")
        )
        key = {"id": page.c.id, "name": page.c.name, "state": page.c.state}[query.sort]
        statement = (
            select(page.c.id, page.c.name, page.c.state, *columns)
            .select_from(page)
            .outerjoin(latest, latest.c.task_id == page.c.id)
            .outerjoin(TaskInstance, and_(TaskInstance.task_id == latest.c.task_id,
                                          TaskInstance.attempt == latest.c.attempt))
            .order_by(key.desc() if query.descending else key.asc(),
                      page.c.id.desc() if query.descending else page.c.id.asc())
        )  # fmt: skip
        offset = 0  # the page is already cut
    rows = [task_row(row) for row in session.execute(
        statement.limit(query.per_page + 1).offset(offset))]  # fmt: skip
    total = None
    if not query.name and query.sort not in USAGE_SORTS:
        counts = queries.task_counts(session, run_id)
        total = counts.get(query.state, 0) if query.state else sum(counts.values())
    return TaskPage(rows[: query.per_page], len(rows) > query.per_page, total)


def _task_row_columns() -> tuple[Any, ...]:
    """The latest attempt's columns of a `TaskRow`, after the task's id, name and state."""
    return (
        TaskInstance.id, TaskInstance.state, TaskInstance.attempt,
        TaskInstance.exit_record["reason"].as_string(), TaskInstance.wallclock,
        TaskInstance.maxrss, TaskInstance.cpu,
        TaskInstance.requested_resources["memory"].as_string(), TaskInstance.hostname,
    )  # fmt: skip


def _task_filters(statement: Any, query: TaskQuery) -> Any:
    if query.state:
        statement = statement.where(Task.state == query.state)
    if query.name:
        statement = statement.where(Task.name.like(f"%{_like_escaped(query.name)}%", escape="\\"))
    return statement


# --- one task -------------------------------------------------------------------------------


@dataclass
class Attempt:
    instance: TaskInstance
    events: list[Any] = field(default_factory=list)
    stdout: LogTail | None = None
    stderr: LogTail | None = None


@dataclass(frozen=True)
class LogTail:
    path: str
    lines: list[str]
    size: int | None
    problem: str | None


def task_detail(session: Session, run_id: int, task_id: int) -> tuple[Task, list[Attempt]]:
    """The task, and each of its attempts with its events and log tails (newest first)."""
    task = session.get(Task, task_id)
    if task is None or task.run_id != run_id:
        raise NotFoundError(f"Run {run_id} has no task {task_id}.")
    work_dir = session.scalar(select(Run.work_dir).where(Run.id == run_id))
    instances = session.scalars(
        select(TaskInstance)
        .where(TaskInstance.task_id == task_id)
        .order_by(TaskInstance.attempt.desc())
    ).all()
    attempts = [Attempt(instance) for instance in instances]
    by_id = {attempt.instance.id: attempt for attempt in attempts}
    if by_id:
        events = session.execute(
            select(Event.id, Event.at, Event.kind, Event.from_state, Event.to_state,
                   Event.message, Event.task_instance_id)
            .where(Event.run_id == run_id, Event.task_instance_id.in_(list(by_id)))
            .order_by(Event.id)
            .limit(500)
        ).all()  # fmt: skip
        for event in events:
            by_id[event.task_instance_id].events.append(event)
    for attempt in attempts:
        attempt.stdout = _tail(attempt.instance.stdout_path, work_dir)
        attempt.stderr = _tail(attempt.instance.stderr_path, work_dir)
    return task, attempts


def log_path(recorded: str | None, work_dir: str | None) -> Path | None:
    """Where a recorded log is on this machine (relative paths are in the run's directory)."""
    if recorded is None:
        return None
    path = Path(recorded)
    if not path.is_absolute() and work_dir:
        path = Path(work_dir) / path
    return path


def _tail(recorded: str | None, work_dir: str | None) -> LogTail | None:
    path = log_path(recorded, work_dir)
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            content = handle.read()
    except FileNotFoundError:
        return LogTail(str(path), [], None, "the file does not exist (any more)")
    except OSError as exc:
        return LogTail(str(path), [], None, f"the file cannot be read: {exc.strerror or exc}")
    lines = content.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES and lines:
        lines = lines[1:]  # the first line read is likely cut
    return LogTail(str(path), lines[-TAIL_LINES:], size, None)
