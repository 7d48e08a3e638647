"""`jobfleet status`, `logs`, `usage`, `events` and `queues`: looking into the ledger.

Every command but `queues add/remove/sync` only reads the ledger: it opens it read-only
(through read sessions, which on SQLite never block the service writing it; a ledger the user
may only read works too), and refuses a ledger file that does not exist rather than creating an
empty one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import click

from jobfleet.core.cli.common import (
    LEDGER_ID,
    MAX_ID,
    RUN_REF,
    console,
    json_option,
    ledger_option,
    open_ledger,
    print_json,
)
from jobfleet.core.errors import JobfleetError, ResourceError
from jobfleet.core.resources import format_memory, format_runtime, memory_text

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from jobfleet.core.host.ledger import Ledger
    from jobfleet.core.host.rows import EventRow, RunSummary, StatusSource, TaskRow

# The ledger, SQLAlchemy and rich are imported inside the commands, when they run: `jobfleet
# --help` must not pay for them (see common.py).

# How often `events --follow` looks for new events.
FOLLOW_INTERVAL: Final = 0.5
# Events read per statement: a long log is printed page by page.
EVENT_PAGE: Final = 1000
# Bytes copied at a time by `logs`.
CHUNK: Final = 64 * 1024

_TASK_STATE_STYLES: Final = {
    "done": "green",
    "failed": "red",
    "killed": "yellow",
    "pending": "cyan",
}
_RUN_STATUS_STYLES: Final = {**_TASK_STATE_STYLES, "running": "cyan", "created": "dim"}


# --- shared helpers -------------------------------------------------------------------------


@contextmanager
def existing_ledger(url: str | None, *, write: bool = False) -> Iterator[Ledger]:
    """The ledger, for a command that does not create one: a missing SQLite file is an error.

    It is opened read-only unless the command writes (`write`).
    """
    from jobfleet.core.host.ledger import resolve_url

    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite" and resolved.database:
        _check_ledger_file(Path(resolved.database))
    ledger = open_ledger(url, read_only=not write)
    try:
        yield ledger
    finally:
        ledger.close()


def _check_ledger_file(path: Path) -> None:
    from jobfleet.core.host.rows import NotFoundError

    if not path.exists():
        raise NotFoundError(
            f"There is no ledger at {path}: nothing has run with it yet. Name another "
            "with --ledger URL or $JOBFLEET_LEDGER."
        )


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return format_runtime(round(value))


def _memory(value: int | None) -> str:
    return "-" if value is None else format_memory(value)


def _text(value: object, style: str = "") -> Text:
    from rich.text import Text

    # User data (task names, messages) goes into tables as Text, never as rich markup.
    return Text("-" if value is None else str(value), style=style)


def _state_name(letter: str) -> str:
    from jobfleet.core.host.ledger import InstanceState

    try:
        return InstanceState(letter).name
    except ValueError:
        return "?"


_T = TypeVar("_T")

# --- status ---------------------------------------------------------------------------------


@click.command()
@click.argument("run_ref", metavar="[RUN]", type=RUN_REF, required=False)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_ID),
    default=20,
    show_default=True,
    help="How many tasks (with RUN) or runs (without) to show.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every task (or run); ignore --limit.")
@json_option
@ledger_option
def status(
    run_ref: str | None, limit: int, show_all: bool, as_json: bool, ledger_url: str | None
) -> None:
    """Show the runs in the ledger, or one run in detail.

    Without RUN: the newest runs with their task counts and whether a service owns them now.
    With RUN (an id, or a name when only one run has it): the run, how many task instances
    are in each state (Q queued … D done), how many tasks are done, failed or pending, and the
    first tasks with their latest attempt. `jobfleet logs INSTANCE` shows an attempt's output.
    """
    view = _from_status_source(
        ledger_url, lambda source: _status_view(source, run_ref, None if show_all else limit)
    )
    if isinstance(view, _RunsView):
        if as_json:
            print_json({"runs": [summary.to_dict() for summary in view.summaries]})
            return
        _print_runs(view.summaries, view.total, view.where)
        return
    if as_json:
        print_json(
            {
                "run": view.summary.to_dict(),
                "state_counts": view.states,
                "task_counts": view.tasks,
                "tasks": [row.to_dict() for row in view.rows],
                "tasks_not_shown": view.hidden,
                "nodes": view.nodes,
            }
        )
        return
    _print_run(view.summary, view.states, view.tasks, view.rows, view.hidden)
    if view.nodes is not None:
        _print_nodes(view.nodes)


@dataclass(frozen=True)
class _RunsView:
    """What `status` shows without RUN."""

    where: str
    total: int
    summaries: list[RunSummary]


@dataclass(frozen=True)
class _RunView:
    """What `status RUN` shows."""

    summary: RunSummary
    states: dict[str, int]
    tasks: dict[str, int]
    rows: list[TaskRow]
    hidden: int
    nodes: dict[str, Any] | None = None
    """The autoscaler's last view of the nodes, for an autoscaled run."""


def _status_view(
    source: StatusSource, run_ref: str | None, limit: int | None
) -> _RunsView | _RunView:
    """Everything `status` shows, asked of either reader; `limit` None is --all."""
    if run_ref is None:
        total = source.run_count()
        summaries = source.run_summaries(total if limit is None else limit)
        return _RunsView(source.where, total, summaries)
    summary = source.find_run_summary(run_ref)
    states = source.state_counts(summary.id)
    # The summary has counted the tasks already: on a run of a million tasks each count is
    # tens of milliseconds.
    tasks = summary.task_counts()
    task_rows = source.task_rows(summary.id, limit)
    return _RunView(
        summary,
        states,
        tasks,
        task_rows,
        summary.tasks_total - len(task_rows),
        source.scaler_view(summary.id),
    )


def _print_nodes(view: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    nodes = view.get("nodes") or []
    source = f"{view.get('provisioner')}: {view.get('node_types')}"
    table = Table(title=f"nodes ({source}; as of {view.get('at')})", title_justify="left")
    for column in ("node", "type", "capacity", "state", "seen as", "cores used", "age"):
        table.add_column(column)
    for node in nodes:
        used = node.get("cores_used")
        total = node.get("cores_total")
        table.add_row(
            Text(str(node.get("name"))),
            Text(str(node.get("node_type"))),
            Text("spot" if node.get("preemptible") else "on demand"),
            Text(str(node.get("state"))),
            Text(str(node.get("distributor_name") or "-")),
            Text("-" if used is None else f"{used:g}/{total:g}"),
            Text(f"{float(node.get('age') or 0):.0f}s"),
        )
    if not nodes:
        table.caption = "No nodes."
    console().print(table)


def _from_status_source(url: str | None, read: Callable[[StatusSource], _T]) -> _T:
    """`read` of the ledger at `url`: of a current SQLite ledger through the stdlib's sqlite3,
    which spares `status` the import of SQLAlchemy (host/quick_read.py, start-up time); of any
    other (PostgreSQL, an older schema to migrate, a file to refuse) through SQLAlchemy."""
    from jobfleet.core.host import quick_read

    database = quick_read.sqlite_file(url)
    if database is not None:
        _check_ledger_file(Path(database))
        try:
            with quick_read.open_reader(database) as reader:
                return read(reader)
        except quick_read.Unavailable:
            pass  # SQLAlchemy's path migrates, refuses or explains, as for every command
    from jobfleet.core.host.queries import SessionStatus

    with existing_ledger(url) as ledger, ledger.read_session() as session:
        return read(SessionStatus(session, ledger.safe_url))


def _owner(summary: RunSummary) -> Text:
    from rich.text import Text

    if summary.owner_token is None:
        return Text("-")
    if summary.owner_active:
        return Text(f"{summary.owner_token} (active)", style="green")
    if summary.owner_orphaned:
        return Text(f"{summary.owner_token} (orphaned: owner dead)", style="red")
    return Text(f"{summary.owner_token} (expired)", style="dim")


def _print_runs(summaries: Sequence[RunSummary], total: int, where: str) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not summaries:
        out.print(Text(f"No runs in the ledger at {where}."))
        return
    table = Table(title=Text(f"runs in {where}"), title_justify="left")
    for column in ("id", "name", "cluster", "status", "done", "failed", "killed", "pending"):
        numeric = column in ("id", "done", "failed", "killed", "pending")
        table.add_column(column, justify="right" if numeric else "left")
    table.add_column("total", justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("owner")
    for summary in summaries:
        table.add_row(
            str(summary.id),
            _text(summary.name),
            _text(summary.cluster),
            _text(summary.status, _RUN_STATUS_STYLES.get(summary.status, "")),
            str(summary.tasks_done),
            str(summary.tasks_failed),
            str(summary.tasks_killed),
            str(summary.tasks_pending),
            str(summary.tasks_total),
            _time(summary.created_at),
            _owner(summary),
        )
    if total > len(summaries):
        table.caption = f"… {total - len(summaries)} older runs: use --all"
    out.print(table)


def _print_run(
    summary: RunSummary,
    states: dict[str, int],
    tasks: dict[str, int],
    rows: Sequence[TaskRow],
    hidden: int,
) -> None:
    from rich.text import Text

    out = console()
    header = Text.assemble(
        ("Run ", "bold"),
        (str(summary.id), "bold"),
        f" {summary.name!r} on {summary.cluster}: ",
        (summary.status, _RUN_STATUS_STYLES.get(summary.status, "")),
    )
    out.print(header)
    out.print(
        Text(
            f"created {_time(summary.created_at)}, finished {_time(summary.finished_at)} (UTC); "
            "owner "
        )
        + _owner(summary)
    )
    if summary.owner_orphaned:
        out.print(
            f"Its service is gone: `jobfleet run --resume {summary.id}` finishes the run, "
            f"`jobfleet kill {summary.id}` kills it.",
            highlight=False,
            markup=False,
        )
    instances = ", ".join(
        f"{letter} {_state_name(letter).lower().replace('_', ' ')} {count}"
        for letter, count in states.items()
    )
    out.print(Text(f"instances: {instances or 'none yet'}"))
    task_line = ", ".join(f"{state} {count}" for state, count in tasks.items())
    out.print(Text(f"tasks: {task_line or 'none'} (of {summary.tasks_total})"))
    if not rows:
        return
    table = task_table(rows)
    if hidden > 0:
        table.caption = f"… {hidden} more tasks: use --all"
    out.print(table)


def task_table(rows: Sequence[TaskRow], title: str | None = None) -> Table:
    """One line per task with its latest attempt (names shown as text, never as markup)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=None if title is None else Text(title), title_justify="left")
    for column in ("task", "state", "instance", "attempts", "exit", "wall", "maxrss", "cpu"):
        numeric = column in ("attempts", "wall", "maxrss", "cpu")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        instance = "-" if row.instance_id is None else f"{row.instance_id} {row.instance_state}"
        table.add_row(
            _text(row.name),
            _text(row.task_state, _TASK_STATE_STYLES.get(row.task_state, "")),
            instance,
            str(row.attempts),
            _text(row.exit_reason),
            _seconds(row.wallclock),
            _memory(row.maxrss),
            _seconds(row.cpu),
        )
    return table


# --- logs -----------------------------------------------------------------------------------


@click.command()
@click.argument("instance_id", metavar="INSTANCE", type=LEDGER_ID)
@click.option("--stderr", "use_stderr", is_flag=True, help="Show standard error, not output.")
@click.option(
    "--tail", type=click.IntRange(0, MAX_ID), metavar="N", help="Show only the last N lines."
)
@json_option
@ledger_option
def logs(
    instance_id: int, use_stderr: bool, tail: int | None, as_json: bool, ledger_url: str | None
) -> None:
    """Print what a task instance (one attempt) wrote to its output or error.

    INSTANCE is the instance id that `jobfleet status RUN` shows. The file is copied as it is,
    byte for byte (binary output too), from the path the ledger recorded when the attempt
    started; the file must be readable from this machine.

    With --json: one object with the instance, run, stream, path, size in bytes and the text
    (bytes that are not UTF-8 replaced by U+FFFD; `base64` then holds them exactly). It holds
    the whole output (or its --tail) in memory, where the plain form streams it.
    """
    from jobfleet.core.host import queries
    from jobfleet.core.host.queries import NotFoundError

    stream = "stderr" if use_stderr else "stdout"
    with existing_ledger(ledger_url) as ledger, ledger.read_session() as session:
        instance = queries.find_instance(session, instance_id)
        recorded = instance.stderr_path if use_stderr else instance.stdout_path
        state, run_id = instance.state, instance.run_id
        work_dir = queries.run_work_dir(session, run_id)
    if recorded is None:
        where = f"state {state} ({_state_name(state)})"
        if _has_started(state):
            raise NotFoundError(
                f"Task instance {instance_id} has no {stream} file recorded; it is in {where}."
            )
        raise NotFoundError(
            f"Task instance {instance_id} has no {stream} file recorded yet: it is in {where} "
            "and has not started."
        )
    path = Path(recorded)
    if not path.is_absolute() and work_dir:
        path = Path(work_dir) / path
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(
            f"The {stream} file of task instance {instance_id}, {path}, does not exist (any more)."
        ) from None
    except OSError as exc:
        raise JobfleetError(
            f"The {stream} file of task instance {instance_id}, {path}, cannot be read: "
            f"{exc.strerror or exc}."
        ) from None
    with handle:
        if tail is not None:
            handle.seek(_tail_start(handle, tail))
        if not as_json:
            _copy_to_stdout(handle)
            return
        content = handle.read()
    print_json(
        {
            "instance_id": instance_id,
            "run_id": run_id,
            "stream": stream,
            "path": str(path),
            "bytes": len(content),
            **_json_text(content),
        }
    )


def _json_text(content: bytes) -> dict[str, Any]:
    """The output as JSON can carry it: text, and base64 as well when it is not UTF-8."""
    try:
        return {"text": content.decode("utf-8"), "utf8": True}
    except UnicodeDecodeError:
        return {
            "text": content.decode("utf-8", "replace"),
            "utf8": False,
            "base64": base64.b64encode(content).decode("ascii"),
        }


def _has_started(letter: str) -> bool:
    from jobfleet.core.host.ledger import InstanceState

    return letter not in (InstanceState.QUEUED, InstanceState.INSTANTIATED, InstanceState.LAUNCHED)


def _tail_start(handle: IO[bytes], lines: int) -> int:
    """The offset where the last `lines` lines of the file begin, read backwards by blocks."""
    end = handle.seek(0, os.SEEK_END)
    if lines == 0:
        return end
    found = 0
    position = end
    while position > 0:
        start = max(0, position - CHUNK)
        handle.seek(start)
        block = handle.read(position - start)
        index = len(block)
        while (index := block.rfind(b"\n", 0, index)) >= 0:
            # A newline as the file's last byte ends the last line; it does not start one.
            if start + index != end - 1:
                found += 1
                if found == lines:
                    return start + index + 1
        position = start
    return 0


def _copy_to_stdout(handle: IO[bytes]) -> None:
    sys.stdout.flush()
    out = sys.stdout.buffer
    try:
        shutil.copyfileobj(handle, out, CHUNK)
        out.flush()
    except BrokenPipeError:
        # `jobfleet logs 7 | head`: the reader left, which is not an error. Point stdout at
        # /dev/null so that Python's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


# --- usage ----------------------------------------------------------------------------------


@click.command()
@click.argument("run_ref", metavar="RUN", type=RUN_REF)
@json_option
@ledger_option
def usage(run_ref: str, as_json: bool, ledger_url: str | None) -> None:
    """Compare what each task of a run used with what it requested.

    One line per task, from its latest attempt that reported usage: requested memory, peak
    memory (maxrss) and its share of the request, cpu and wall time, and the memory each
    attempt requested (a retry after running out of memory asks for more). Flags:
    over-requested (the request is at least twice the peak, and at least 64M),
    resource-retried (an earlier attempt was killed for memory or time), near limit (the peak
    reached 90% of the request).
    """
    from rich.table import Table
    from rich.text import Text

    from jobfleet.core.host import queries

    flag_styles = {
        queries.OVER_REQUESTED: "yellow",
        queries.RESOURCE_RETRIED: "magenta",
        queries.NEAR_LIMIT: "bold red",
    }
    with existing_ledger(ledger_url) as ledger, ledger.read_session() as session:
        run = queries.find_run(session, run_ref)
        run_id, run_name = run.id, run.name
        rows = queries.usage_rows(session, run.id)
    total_cpu = sum(row.cpu or 0.0 for row in rows)
    peak = max(rows, key=lambda row: row.maxrss, default=None)
    if as_json:
        print_json(
            {
                "run_id": run_id,
                "tasks": [row.to_dict() for row in rows],
                "total_cpu": total_cpu,
                "peak_maxrss": None if peak is None else peak.maxrss,
            }
        )
        return
    out = console()
    if peak is None:
        out.print(Text(f"No task of run {run_id} ({run_name}) has reported usage yet."))
        return
    table = Table(title=Text(f"usage of run {run_id} ({run_name})"), title_justify="left")
    columns = ("task", "attempt", "requested", "maxrss", "used", "cpu", "wall", "memory by attempt")
    for column in columns:
        numeric = column in ("requested", "maxrss", "used", "cpu", "wall")
        table.add_column(column, justify="right" if numeric else "left")
    table.add_column("flag")
    for row in rows:
        share = (
            "-" if not row.requested_memory else f"{100 * row.maxrss / row.requested_memory:.0f}%"
        )
        table.add_row(
            _text(row.name),
            f"{row.attempt}/{row.attempts}",
            _memory(row.requested_memory),
            _memory(row.maxrss),
            share,
            _seconds(row.cpu),
            _seconds(row.wallclock),
            _text(" → ".join(memory or "-" for memory in row.memory_by_attempt)),
            _text(row.flag or "", flag_styles.get(row.flag or "", "")),
        )
    out.print(table)
    out.print(
        Text(
            f"{len(rows)} tasks; total cpu {_seconds(total_cpu)}; "
            f"peak maxrss {format_memory(peak.maxrss)} ({peak.name})"
        )
    )


# --- events ---------------------------------------------------------------------------------


@click.command()
@click.argument("run_ref", metavar="RUN", type=RUN_REF)
@click.option(
    "--instance",
    "instance_id",
    type=LEDGER_ID,
    metavar="ID",
    help="Only this task instance's events.",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing new events until the run is over (done, failed or killed), or Ctrl-C.",
)
@json_option
@ledger_option
def events(
    run_ref: str,
    instance_id: int | None,
    follow: bool,
    as_json: bool,
    ledger_url: str | None,
) -> None:
    """Print a run's event log: every state change, resource adjustment and kill request.

    One line per event: time (UTC), the instance (task and attempt), the change (`R → D`) or
    the kind of event, and its message. With --json, one JSON object per line, so that
    `--follow --json` can be read as a stream.
    """
    from jobfleet.core.host import queries
    from jobfleet.core.host.queries import NotFoundError

    with existing_ledger(ledger_url) as ledger:
        with ledger.read_session() as session:
            run_id = queries.find_run(session, run_ref).id
            if instance_id is not None:
                instance = queries.find_instance(session, instance_id)
                if instance.run_id != run_id:
                    raise NotFoundError(
                        f"Task instance {instance_id} belongs to run {instance.run_id}, "
                        f"not to run {run_id}."
                    )
        with _interrupt_as_flag() as interrupted:
            _print_events(
                ledger, run_id, instance_id, follow=follow, as_json=as_json, stop=interrupted
            )


@contextmanager
def _interrupt_as_flag() -> Iterator[list[int]]:
    """Ctrl-C sets a flag instead of raising: a KeyboardInterrupt raised inside the database
    driver or its connection pool can leave a lock held, and closing the ledger then hangs.
    The flag (non-empty once interrupted) is checked between two looks at the ledger."""
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: interrupted.append(number))
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_events(
    ledger: Ledger,
    run_id: int,
    instance_id: int | None,
    *,
    follow: bool,
    as_json: bool,
    stop: Sequence[int] = (),
) -> None:
    from jobfleet.core.host import queries
    from jobfleet.core.host.ledger import FINAL_RUN_STATUSES

    last = 0
    while not stop:
        with ledger.read_session() as session:
            # The status first: every event written before the run became final is then
            # visible to the query below, so nothing is missed when the loop stops.
            status = queries.run_status(session, run_id)
            batch = queries.events(
                session, run_id, after_id=last, instance_id=instance_id, limit=EVENT_PAGE
            )
        for row in batch:
            click.echo(json.dumps(row.to_dict(), default=str) if as_json else _event_line(row))
            last = row.id
        if len(batch) == EVENT_PAGE:
            continue
        if not follow or status is None or status in FINAL_RUN_STATUSES:
            return
        time.sleep(FOLLOW_INTERVAL)  # a Ctrl-C during the sleep is seen when it ends


def _event_line(row: EventRow) -> str:
    if row.instance_id is None:
        who = "run"
    else:
        who = f"instance {row.instance_id}"
        if row.task_name is not None:
            who += f" ({row.task_name} #{row.attempt})"
    if row.kind == "transition":
        what = f"{row.from_state or ''} → {row.to_state}".strip()
    else:
        what = row.kind
    line = f"{_time(row.at)}  {who}  {what}"
    return f"{line}  {row.message}" if row.message else line


# --- queues ---------------------------------------------------------------------------------

_LIMIT_OPTIONS: Final = (
    ("max_cores", "N", "The most cores a task may ask for."),
    ("max_memory", "SIZE", "The most memory a task may ask for, with a unit: 64G, 512M."),
    ("max_runtime", "TIME", "The longest wall time a task may ask for: 3600, 2h, 1-00:00:00."),
    ("max_gpus", "N", "The most GPUs a task may ask for."),
    ("min_cores", "N", "The fewest cores a task is given."),
    ("default_cores", "N", "Cores for a task that asks for none."),
    ("default_memory", "SIZE", "Memory for a task that asks for none, with a unit."),
    ("default_runtime", "TIME", "Wall time for a task that asks for none."),
    ("default_gpus", "N", "GPUs for a task that asks for none."),
)


@click.group()
def queues() -> None:
    """List, add and remove the queues of the clusters in the ledger, with their limits.

    A queue's limits (max_memory, max_runtime, …) and defaults are checked against every task
    sent to it: a request over a maximum is clamped (and the adjustment logged) or refused.
    """


@queues.command("list")
@click.option("--cluster", "cluster_name", metavar="NAME", help="Only this cluster's queues.")
@json_option
@ledger_option
def list_queues(cluster_name: str | None, as_json: bool, ledger_url: str | None) -> None:
    """List the queues of every cluster (or of one) with their parameters."""
    from rich.table import Table
    from rich.text import Text

    from jobfleet.core.host import queues as queue_admin

    with existing_ledger(ledger_url) as ledger, ledger.read_session() as session:
        found = [entry.to_dict() for entry in queue_admin.list_queues(session, cluster_name)]
        where = ledger.safe_url
    if as_json:
        print_json(found)
        return
    out = console()
    if not found:
        out.print(Text(f"No queues in the ledger at {where}. Add one: jobfleet queues add"))
        return
    table = Table(title="queues", title_justify="left")
    for column in ("cluster", "type", "queue", "parameters"):
        table.add_column(column)
    for entry in found:
        shown = ", ".join(_parameter_text(k, v) for k, v in entry["parameters"].items())
        table.add_row(
            _text(entry["cluster"]),
            _text(entry["cluster_type"]),
            _text(entry["queue"]),
            _text(shown),
        )
    out.print(table)


def _parameter_text(key: str, value: Any) -> str:
    if key.endswith("runtime") and isinstance(value, int):
        return f"{key}={format_runtime(value)}"
    return f"{key}={value}"


def _limit_options(function: Any) -> Any:
    for key, metavar, text in reversed(_LIMIT_OPTIONS):
        flag = "--" + key.replace("_", "-")
        function = click.option(flag, key, metavar=metavar, help=text)(function)
    return function


@queues.command("add")
@click.argument("cluster_name", metavar="CLUSTER")
@click.argument("queue_name", metavar="QUEUE")
@_limit_options
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another parameter for the backend (repeatable); VALUE is read as JSON when it "
    "can be (5, true, [1,2]), else as text.",
)
@click.option("--replace", is_flag=True, help="Replace the parameters of an existing queue.")
@json_option
@ledger_option
def add_queue(
    cluster_name: str,
    queue_name: str,
    params: tuple[str, ...],
    replace: bool,
    as_json: bool,
    ledger_url: str | None,
    **limits: str | None,
) -> None:
    """Add QUEUE to CLUSTER, with its limits and defaults.

    The limits are checked before anything is written. A cluster that is not in the ledger yet
    is added when CLUSTER names an installed backend (`jobfleet plugins`), which becomes its
    type. An existing queue is only changed with --replace, which replaces all its parameters.
    """
    from jobfleet.core.host import queues as queue_admin

    parameters = _queue_parameters(limits, params)
    with open_ledger(ledger_url) as ledger, ledger.session() as session:
        added = queue_admin.add_queue(
            session, cluster_name, queue_name, parameters, replace=replace
        )
    if as_json:
        print_json(
            {
                "cluster": cluster_name,
                "queue": queue_name,
                "parameters": parameters,
                "replaced": added.replaced,
                "new_cluster": added.new_cluster,
                "cluster_type": added.cluster_type,
            }
        )
        return
    verb = "Replaced" if added.replaced else "Added"
    shown = ", ".join(_parameter_text(k, v) for k, v in parameters.items()) or "no limits"
    note = f" (new cluster of type {added.cluster_type})" if added.new_cluster else ""
    click.echo(f"{verb} the queue {queue_name!r} of cluster {cluster_name!r}{note}: {shown}.")


def _queue_parameters(limits: dict[str, str | None], params: Sequence[str]) -> dict[str, Any]:
    """The queue's parameters, limits checked and written in canonical units."""
    from jobfleet.core.resources import QueueLimits, check_task_memory

    parameters: dict[str, Any] = {key: value for key, value in limits.items() if value is not None}
    for item in params:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE.", param_hint="--param")
        if key in parameters:
            raise click.BadParameter(f"{key!r} is given twice.", param_hint="--param")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        parameters[key] = value
    checked = QueueLimits.from_parameters(parameters)
    for key in ("max_memory", "default_memory"):
        size = getattr(checked, key)
        if size is not None:
            check_task_memory(size, field=key, value=parameters[key])
    for key in list(parameters):
        if key in {name for name, _, _ in _LIMIT_OPTIONS}:
            parameters[key] = _canonical(key, getattr(checked, key))
    return parameters


def _canonical(key: str, value: float | int) -> Any:
    if key.endswith("memory"):
        return memory_text(int(value))
    if key.endswith("cores"):
        return int(value) if float(value).is_integer() else value
    return int(value)


@queues.command("remove")
@click.argument("cluster_name", metavar="CLUSTER")
@click.argument("queue_name", metavar="QUEUE")
@json_option
@ledger_option
def remove_queue(cluster_name: str, queue_name: str, as_json: bool, ledger_url: str | None) -> None:
    """Remove QUEUE from CLUSTER; refused while arrays of past runs refer to it."""
    from jobfleet.core.host import queues as queue_admin

    with existing_ledger(ledger_url, write=True) as ledger, ledger.session() as session:
        queue_admin.remove_queue(session, cluster_name, queue_name)
    if as_json:
        print_json({"cluster": cluster_name, "queue": queue_name, "removed": True})
        return
    click.echo(f"Removed the queue {queue_name!r} of cluster {cluster_name!r}.")


@queues.command("sync")
@click.option("--cluster", "cluster_name", required=True, metavar="NAME", help="The backend.")
@json_option
@ledger_option
def sync_queues(cluster_name: str, as_json: bool, ledger_url: str | None) -> None:
    """Read the cluster's own queues (e.g. Slurm's partitions) into the ledger.

    Each queue the backend reports is added, or has its parameters replaced; queues it does not
    report are left as they are. The backend's settings come from its environment variables
    (`jobfleet plugins NAME` lists them).
    """
    from jobfleet.core.host import queues as queue_admin
    from jobfleet.core.host.queues import QueueError
    from jobfleet.core.plugins import default_registry

    registry = default_registry()
    plugin = registry.get_cluster(cluster_name)
    found = registry.cluster_queues(cluster_name, plugin.settings(None, os.environ))
    if found is None:
        raise QueueError(
            f"The {cluster_name} backend cannot read its queues from the cluster; add them "
            "with `jobfleet queues add`."
        )
    # The backend's values are checked like the command line's, before anything is written.
    checked = {name: _synced_parameters(name, parameters) for name, parameters in found.items()}
    with open_ledger(ledger_url) as ledger, ledger.session() as session:
        existing = queue_admin.save_queues(session, cluster_name, checked)
    if as_json:
        print_json({"cluster": cluster_name, "queues": checked})
        return
    for name, parameters in checked.items():
        shown = ", ".join(_parameter_text(k, v) for k, v in parameters.items()) or "no limits"
        verb = "updated" if name in existing else "added"
        click.echo(f"{cluster_name}/{name}: {verb}: {shown}")


def _synced_parameters(queue: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from jobfleet.core.host.queues import QueueError

    try:
        limits = {k: str(v) for k, v in parameters.items() if k in _LIMIT_KEYS and v is not None}
        others = [f"{k}={json.dumps(v)}" for k, v in parameters.items() if k not in _LIMIT_KEYS]
        return _queue_parameters(dict(limits), others)
    except (ResourceError, click.BadParameter) as exc:
        problem = f"The backend reported a queue {queue!r} jobfleet cannot read: {exc}"
        raise QueueError(problem) from None


_LIMIT_KEYS = frozenset(name for name, _, _ in _LIMIT_OPTIONS)

COMMANDS: Final[list[click.Command]] = [status, logs, usage, events, queues]
