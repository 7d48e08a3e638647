"""The reference host end to end with the dummy backend, and `jobfleet status` on a large run.

    uv run python bench/host.py [--tasks 10000] [--instances 1000000] [--events 1]
                                [--part all|end-to-end|status] [--quick] [--profile]
                                [--explain] [--keep DIR] [--dir DIR] [--json]

1. End to end: a new SQLite ledger in a temporary directory; `--tasks` tasks of `true` on the
   `dummy` cluster (JOBFLEET_DUMMY_REPORT_DELAY=0: every instance is over as soon as it is
   submitted). Timed: `create_run` (tasks, first attempts and their events in one transaction),
   `DistributorService.start()`, `run_until_done()` (poll interval 0.001 s, at most 0.01 s) and
   `close()`: every ledger write of Q → I → O → X → D (the dummy backend runs nothing, so no
   worker reports: the service sees the instances gone from `get_submitted_or_running` and
   triages each with `get_remote_exit_info`), the arrays, the channel's spec files, the tasks'
   ends. An untimed run of 50 tasks goes first (imports, first-time costs). Printed: tasks per
   second, the time of each phase and round, and the ledger's size afterwards. The baseline,
   measured in the same run (best of 3), is the dummy distributor alone driving the same number
   of instances without any ledger: `submit_array_to_batch_…` in arrays of 1000, one
   `get_submitted_or_running`, one `get_remote_exit_info` per instance. Target: at least 1,000
   tasks per second end to end. `--profile` runs it once more under cProfile (create_run to
   close only; not timed) and prints the top 15 cumulative entries in jobfleet's own code and
   the top 15 by own time overall.

2. Status at scale: a ledger with one run of `--instances` task instances, written directly with
   bulk inserts (not through the service: it would take hours): ~95% of tasks done at their
   first attempt, 5% retried once after an E (the retry done, or E again with the task failed:
   max_attempts is 2), the last 0.5% of tasks running and the last 0.5% queued, as in a run
   still going; instance rows carry what the worker reports (exit record, usage, paths),
   arrays of 1000 carry their distributor ids, and each instance has its last `--events`
   transition events (a real run writes 4–5 per instance: Q, Q→I, I→O, O→R, R→D), in batches
   of 50,000 rows with progress on stderr (about 8,000 instances a second here). Then
   `jobfleet status RUN` as the CLI does it in process: `Ledger.open`, a read session,
   `find_run`, `run_summary`, `state_counts`, `task_counts`, `task_rows(limit=20)` and the JSON
   of it — once cold (a new Ledger, the file dropped from the page cache with
   `posix_fadvise(DONTNEED)`) and five times warm (median) — and the real CLI
   `jobfleet status RUN --json --ledger PATH` as a subprocess (median of 5), next to
   `jobfleet --version` and `jobfleet status --help` as the cost of starting the process and
   importing the CLI (`--version` also looks up every plugin's version; `status --help`
   imports the same modules as `status` and opens no ledger).
   Subprocesses get a bytecode cache of their own (PYTHONPYCACHEPREFIX, filled by one untimed
   run), as an installed jobfleet has: on machines with PYTHONDONTWRITEBYTECODE=1 every start
   would otherwise recompile SQLAlchemy and click. Target: status in under 200 ms. `--explain`
   prints SQLite's EXPLAIN QUERY PLAN of every statement `status` runs, with its time.

`--quick` (1,000 tasks, 50,000 instances) is a smoke run of about half a minute. `--keep DIR`
keeps the generated ledger as DIR/ledger.db. Nothing here is asserted by a test: the machine is
shared and noisy, so the ratio against the baseline means more than the absolute rates.
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

# A sibling benchmark: `python bench/host.py` has bench/ on sys.path.
from dispatch import file_system_of
from sqlalchemy import Table, event, insert

import jobfleet
from jobfleet.core.host import queries
from jobfleet.core.host.ledger import (
    Array,
    Cluster,
    Event,
    Ledger,
    Queue,
    Run,
    RunStatus,
    Task,
    TaskInstance,
)
from jobfleet.core.host.runs import ServiceOptions, create_run
from jobfleet.core.host.service import DistributorService, Progress
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.plugins.dummy.distributor import DummyDistributor

TASKS_PER_SECOND_TARGET = 1000.0
STATUS_TARGET_MS = 200.0
ARRAY_SIZE = 1000
WARM_RUNS = 5
STATUS_LIMIT = 20  # `jobfleet status RUN` shows the first 20 tasks
BATCH = 50_000  # rows per INSERT batch (and transaction) when generating the large run
OPTIONS = ServiceOptions(array_size=ARRAY_SIZE, poll_interval=0.001, max_poll_interval=0.01)
MIB = 1024 * 1024


# --- shared ------------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def ledger_bytes(path: Path) -> int:
    """The database file and whatever WAL and shared-memory files it still has."""
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    )


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- 1. end to end -----------------------------------------------------------------------------


@dataclass
class EndToEnd:
    tasks: int
    phases: dict[str, float] = field(default_factory=dict)  # seconds
    rounds: list[float] = field(default_factory=list)  # seconds each
    open_seconds: float = 0.0
    ledger_bytes: int = 0
    baseline_seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def end_to_end(tasks: int, root: Path, profiler: cProfile.Profile | None = None) -> EndToEnd:
    """`tasks` tasks of `true` through a new ledger under `root` and the dummy backend; the
    profiler, if any, runs during the timed part only."""
    result = EndToEnd(tasks)
    path = root / "ledger.db"
    clock = time.perf_counter
    start = clock()
    ledger = Ledger.open(path)
    result.open_seconds = clock() - start
    definitions = [TaskDefinition(name=f"bench-{n}", command="true") for n in range(tasks)]
    try:
        if profiler is not None:
            profiler.enable()
        start = clock()
        run_id = create_run(
            ledger, definitions, cluster="dummy", options=OPTIONS, work_root=root / "runs"
        )
        result.phases["create_run"] = clock() - start

        start = clock()
        service = DistributorService(ledger, run_id)
        service.start()
        result.phases["start"] = clock() - start

        last = clock()

        def on_progress(_progress: Progress) -> None:
            nonlocal last
            now = clock()
            result.rounds.append(now - last)
            last = now

        start = last = clock()
        progress = service.run_until_done(on_progress)
        result.phases["run_until_done"] = clock() - start

        start = clock()
        service.close()
        result.phases["close"] = clock() - start
        if profiler is not None:
            profiler.disable()
    finally:
        ledger.close()
    # Checks, outside the timing: every task done at its first attempt.
    if progress.status is not RunStatus.DONE or dict(progress.task_counts) != {"done": tasks}:
        raise SystemExit(f"end to end: {progress.status}, tasks {dict(progress.task_counts)}")
    if dict(progress.state_counts) != {"D": tasks}:
        raise SystemExit(f"end to end: instances {dict(progress.state_counts)}")
    result.ledger_bytes = ledger_bytes(path)
    return result


def dummy_alone(tasks: int) -> float:
    """Seconds the dummy distributor alone takes to submit, poll and resolve `tasks` instances."""
    distributor = DummyDistributor("dummy")
    distributor.start()
    resources = {"cores": 1, "memory": "1G", "runtime": 3600, "queue": "default"}
    start = time.perf_counter()
    ids: list[str] = []
    for first in range(0, tasks, ARRAY_SIZE):
        steps = distributor.submit_array_to_batch_distributor(
            command="jobfleet-worker-node --array-id 1 --batch-number 0",
            name="bench-array",
            requested_resources=dict(resources),
            array_length=min(ARRAY_SIZE, tasks - first),
        )
        ids.extend(steps[step] for step in range(len(steps)))
    still = distributor.get_submitted_or_running(ids)
    states = [distributor.get_remote_exit_info(did).error_state for did in ids]
    elapsed = time.perf_counter() - start
    distributor.stop()
    if still or {str(state) for state in states} != {"D"}:
        raise SystemExit(f"dummy alone: {len(still)} still running, states {set(states)}")
    return elapsed


def profile_end_to_end(tasks: int, parent: str, lines: int = 15) -> tuple[str, str]:
    """cProfile of one more end-to-end run: (jobfleet's own code by cumulative time, all code
    by own time), `lines` entries each."""
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="jobfleet-bench-host-profile-", dir=parent) as root:
        end_to_end(tasks, Path(root), profiler)
    ours, overall = io.StringIO(), io.StringIO()
    pstats.Stats(profiler, stream=ours).sort_stats("cumulative").print_stats(r"/jobfleet/", lines)
    pstats.Stats(profiler, stream=overall).sort_stats("tottime").print_stats(lines)
    return _trim(ours.getvalue()), _trim(overall.getvalue())


def _trim(text: str) -> str:
    # pstats starts with a header naming the profile and the filter: keep the table only.
    kept = text.splitlines()
    for index, line in enumerate(kept):
        if line.lstrip().startswith("ncalls"):
            return "\n".join(kept[index:]).rstrip()
    return text.rstrip()


# --- 2. a large run, written directly ----------------------------------------------------------

BASE_TIME = datetime(2026, 11, 20, tzinfo=UTC)
RESOURCES = {"cores": 1, "memory": "1G", "runtime": 3600, "queue": "default"}
TASK_RESOURCES = {"memory": "1G", "cores": 1, "runtime": "1h"}
TASK_OPTIONS = {"resource_scale": 1.5, "fallback_queues": []}
USAGE_STR = json.dumps(
    {
        "cgroup_peak": 52428800,
        "cpu_source": "rusage",
        "largest_process_peak": 0,
        "maxrss_source": "cgroup",
        "metric": "none",
        "peak_processes": 1,
        "processes_seen": 1,
        "read_bytes": 0,
        "rusage_maxrss": 22786048,
        "sampled_peak": 0,
        "samples": 3,
        "system": 0.01,
        "user": 1.2,
        "write_bytes": 4096,
        "task_cgroup": "/sys/fs/cgroup/jobfleet/jobfleet-ti-00000000",
    },
    sort_keys=True,
)
EXIT_RECORDS = {
    "D": {
        "reason": "completed",
        "exit_code": 0,
        "signal": None,
        "core_dumped": False,
        "raw_state": "exit 0",
        "message": "completed: exit code 0",
    },
    "E": {
        "reason": "failed",
        "exit_code": 1,
        "signal": None,
        "core_dumped": False,
        "raw_state": "exit 1",
        "message": "failed: exit code 1",
    },
}
# The transitions an instance in each state went through, oldest first.
HISTORY: dict[str, list[tuple[str | None, str]]] = {
    "Q": [(None, "Q")],
    "R": [(None, "Q"), ("Q", "I"), ("I", "O"), ("O", "R")],
    "D": [(None, "Q"), ("Q", "I"), ("I", "O"), ("O", "R"), ("R", "D")],
    "E": [(None, "Q"), ("Q", "I"), ("I", "O"), ("O", "R"), ("R", "E")],
}


def task_plan(instances: int) -> tuple[int, int, int]:
    """(tasks, first task that is running, first task that is queued) for about `instances`
    instances: every 20th task of the first 99% has a second attempt."""
    tasks = instances * 20 // 21
    while True:
        running_from = tasks - 2 * max(1, tasks // 200)
        queued_from = tasks - max(1, tasks // 200)
        if tasks + (running_from + 19) // 20 >= instances:
            return tasks, running_from, queued_from
        tasks += 1


def first_state(index: int, running_from: int, queued_from: int) -> str:
    if index >= queued_from:
        return "Q"
    if index >= running_from:
        return "R"
    return "E" if index % 20 == 0 else "D"


def retry_state(index: int) -> str:
    """The second attempt of a task retried after an E: done, or E again (the task failed)."""
    return "E" if index % 500 == 0 else "D"


@dataclass
class _Writer:
    """Rows for one batch of the generated run; ids are given here, not by the database."""

    run_id: int
    work_dir: str
    events_per_instance: int
    next_array: int = 1
    array_step: int = 0
    next_instance: int = 1
    next_event: int = 1
    arrays: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def instance(self, task_id: int, name: str, attempt: int, state: str) -> None:
        instance_id = self.next_instance
        self.next_instance += 1
        created = BASE_TIME + timedelta(milliseconds=instance_id)
        submitted = started = ended = None
        array_id = step = distributor_id = hostname = stdout = stderr = None
        if state != "Q":
            if not self.arrays or self.array_step == ARRAY_SIZE:
                self.arrays.append(
                    {
                        "id": self.next_array,
                        "run_id": self.run_id,
                        "queue_id": 1,
                        "resources": RESOURCES,
                        "size": 0,
                        "distributor_id": None,
                        "distributor_ids": {},
                        "created_at": created,
                    }
                )
                self.next_array += 1
                self.array_step = 0
            array = self.arrays[-1]
            array_id, step = array["id"], self.array_step
            self.array_step += 1
            distributor_id = f"1a2b3c4d-{instance_id}"
            array["size"] += 1
            array["distributor_ids"][str(step)] = distributor_id
            submitted = created + timedelta(seconds=1)
            started = created + timedelta(seconds=5)
            hostname = f"node{instance_id % 64:03d}"
            logs = f"{self.work_dir}/logs/{name}"
            stdout, stderr = f"{logs}.stdout.{distributor_id}", f"{logs}.stderr.{distributor_id}"
        over = state in ("D", "E")
        if over:
            ended = created + timedelta(seconds=65)
        state_at = ended or started or created
        self.instances.append(
            {
                "id": instance_id,
                "task_id": task_id,
                "run_id": self.run_id,
                "attempt": attempt,
                "state": state,
                "distributor_id": distributor_id,
                "array_id": array_id,
                "array_step": step,
                "requested_resources": RESOURCES,
                "exit_record": EXIT_RECORDS[state] if over else None,
                "maxrss": 52428800 + instance_id % 4096 * 4096 if over else None,
                "cpu": 1.21 if over else None,
                "wallclock": 60.3 if over else None,
                "usage_str": USAGE_STR if over else None,
                "created_at": created,
                "state_at": state_at,
                "submitted_at": submitted,
                "started_at": started,
                "ended_at": ended,
                "heartbeat_at": started if state == "R" else None,
                "kill_requested_at": None,
                "triage_count": 0,
                "hostname": hostname,
                "stdout_path": stdout,
                "stderr_path": stderr,
            }
        )
        history = HISTORY[state][-self.events_per_instance :] if self.events_per_instance else []
        for from_state, to_state in history:
            self.events.append(
                {
                    "id": self.next_event,
                    "run_id": self.run_id,
                    "task_instance_id": instance_id,
                    "kind": "transition",
                    "from_state": from_state,
                    "to_state": to_state,
                    "at": state_at,
                    "message": _event_message(attempt, from_state, to_state, array_id, step),
                    "details": {},
                }
            )
            self.next_event += 1

    def flush(self, ledger: Ledger, tasks: list[dict[str, Any]]) -> None:
        """Write the batch in one transaction (arrays first: instances refer to them)."""
        with ledger.session() as session:
            for model, rows in (
                (Array, self.arrays),
                (Task, tasks),
                (TaskInstance, self.instances),
                (Event, self.events),
            ):
                if rows:
                    # The table, not the ORM class: a Core executemany, without the ORM's bulk
                    # bookkeeping (which takes half the time here).
                    session.execute(insert(cast(Table, model.__table__)), rows)
        # An array never spans two batches: the next instance opens a new one (the service
        # also leaves partial arrays, at the end of each group of a submission round).
        self.array_step = ARRAY_SIZE
        self.arrays, self.instances, self.events = [], [], []


def _event_message(
    attempt: int, from_state: str | None, to_state: str, array_id: int | None, step: int | None
) -> str:
    if from_state is None:
        return f"attempt {attempt} queued" if attempt == 1 else "retry after an application error"
    return {
        "I": f"array {array_id} step {step}",
        "O": "submitted",
        "R": "running",
        "D": "completed: exit code 0",
        "E": "failed: exit code 1",
    }[to_state]


@dataclass
class Generated:
    run_id: int
    tasks: int
    instances: int
    events: int
    arrays: int
    state_counts: dict[str, int]
    task_counts: dict[str, int]
    seconds: float


def generate(path: Path, instances: int, events_per_instance: int) -> Generated:
    """A ledger at `path` holding one run of about `instances` task instances (see the top)."""
    start = time.perf_counter()
    tasks, running_from, queued_from = task_plan(instances)
    ledger = Ledger.open(path)
    try:
        with ledger.session() as session:
            cluster = Cluster(name="dummy", cluster_type="dummy")
            session.add(cluster)
            session.flush()
            session.add(Queue(cluster_id=cluster.id, name="default", parameters={}))
            work_dir = str(path.parent / "runs" / "run-1")
            run = Run(
                name="bench-status",
                cluster_id=cluster.id,
                status=RunStatus.RUNNING.value,
                created_at=BASE_TIME,
                work_dir=work_dir,
                host_url=f"file://{work_dir}/channel",
                options={"service": OPTIONS.to_dict(), "cluster_settings": {}},
            )
            session.add(run)
            session.flush()
            run_id = run.id
        writer = _Writer(run_id, work_dir, events_per_instance)
        states: dict[str, int] = {}
        task_states: dict[str, int] = {}
        written = 0

        def progress(what: str) -> None:
            elapsed = time.perf_counter() - start
            note(
                f"  generating: {written:>9,} / ~{instances:,} instances, {what} "
                f"({elapsed:5.0f} s, {rate(written, elapsed):,.0f} instances/s)"
            )

        # Tasks and their first attempts, in id order, as create_run writes them.
        for first in range(0, tasks, BATCH):
            task_rows = []
            for index in range(first, min(first + BATCH, tasks)):
                state = first_state(index, running_from, queued_from)
                if state == "E":
                    task_state = "failed" if retry_state(index) == "E" else "done"
                else:
                    task_state = "done" if state == "D" else "pending"
                task_states[task_state] = task_states.get(task_state, 0) + 1
                states[state] = states.get(state, 0) + 1
                name = f"task-{index}"
                task_rows.append(
                    {
                        "id": index + 1,
                        "run_id": run_id,
                        "name": name,
                        "command": f"python analysis.py --sample {index} --out out/{index}.parquet",
                        "resources": TASK_RESOURCES,
                        "env": {},
                        "max_attempts": 2,
                        "options": TASK_OPTIONS,
                        "state": task_state,
                    }
                )
                writer.instance(index + 1, name, 1, state)
            written += len(writer.instances)
            writer.flush(ledger, task_rows)
            progress("first attempts")
        # The retries: created later than every first attempt, so their ids come last.
        retried = list(range(0, running_from, 20))
        for first in range(0, len(retried), BATCH):
            for index in retried[first : first + BATCH]:
                state = retry_state(index)
                states[state] = states.get(state, 0) + 1
                writer.instance(index + 1, f"task-{index}", 2, state)
            written += len(writer.instances)
            writer.flush(ledger, [])
            progress("retries")
    finally:
        ledger.close()  # the last connection checkpoints the WAL into the file
    return Generated(
        run_id=run_id,
        tasks=tasks,
        instances=writer.next_instance - 1,
        events=writer.next_event - 1,
        arrays=writer.next_array - 1,
        state_counts=states,
        task_counts=task_states,
        seconds=time.perf_counter() - start,
    )


def evict(path: Path) -> None:
    """Drop the ledger's files from the page cache, so the next read comes from the disk."""
    for suffix in ("", "-wal"):
        name = f"{path}{suffix}"
        if not os.path.exists(name):
            continue
        descriptor = os.open(name, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


STATUS_STEPS = (
    "open",
    "find_run",
    "run_summary",
    "state_counts",
    "task_counts",
    "task_rows",
    "json",
    "close",
)
QUERY_STEPS = ("find_run", "run_summary", "state_counts", "task_counts", "task_rows")


def status_once(path: Path, run_ref: str) -> tuple[dict[str, float], dict[str, Any]]:
    """`jobfleet status RUN --json` in process, step by step: (seconds per step, its output)."""
    times: dict[str, float] = {}
    clock = time.perf_counter

    @contextmanager
    def step(name: str) -> Iterator[None]:
        began = clock()
        yield
        times[name] = clock() - began

    with step("open"):
        ledger = Ledger.open(path)
    with ledger.read_session() as session:
        with step("find_run"):
            run = queries.find_run(session, run_ref)
        with step("run_summary"):
            summary = queries.run_summary(session, run)
        with step("state_counts"):
            states = queries.state_counts(session, run.id)
        with step("task_counts"):
            tasks = queries.task_counts(session, run.id)
        with step("task_rows"):
            rows = queries.task_rows(session, run.id, limit=STATUS_LIMIT)
    with step("json"):
        output = {
            "run": summary.to_dict(),
            "state_counts": states,
            "task_counts": tasks,
            "tasks": [row.to_dict() for row in rows],
            "tasks_not_shown": summary.tasks_total - len(rows),
        }
        json.dumps(output, indent=2, default=str)
    with step("close"):
        ledger.close()
    return times, output


@contextmanager
def statements_seen() -> Iterator[list[tuple[str, Any, float]]]:
    """Every SQL statement any engine executes inside the block: (sql, parameters, seconds to
    execute, without fetching)."""
    seen: list[tuple[str, Any, float]] = []
    started: list[float] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters, time.perf_counter() - started.pop()))

    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)


def explain(path: Path, run_ref: str) -> list[dict[str, Any]]:
    """The statements `status` runs (one warm pass), each with its time run alone (executed and
    fetched through sqlite3, median of 3) and SQLite's EXPLAIN QUERY PLAN."""
    import sqlite3

    with statements_seen() as seen:
        status_once(path, run_ref)
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found = []
    try:
        for statement, parameters, _ in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            params = tuple(parameters or ())
            times = []
            for _ in range(3):
                began = time.perf_counter()
                database.execute(statement, params).fetchall()
                times.append(time.perf_counter() - began)
            plan = database.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            depth: dict[int, int] = {0: -1}
            lines = []
            for node, parent, _unused, detail in plan:
                depth[node] = depth.get(parent, -1) + 1
                lines.append("  " * depth[node] + detail)
            found.append(
                {
                    "sql": " ".join(statement.split()),
                    "parameters": list(params),
                    "ms": ms(statistics.median(times)),
                    "plan": lines,
                }
            )
    finally:
        database.close()
    return found


def jobfleet_command() -> str:
    beside = Path(sys.executable).with_name("jobfleet")
    found = str(beside) if beside.exists() else shutil.which("jobfleet")
    if not found:
        raise SystemExit("no `jobfleet` command beside this Python or on PATH")
    return found


def cli_times(path: Path, run_id: int, cache: Path, expected: dict[str, int]) -> dict[str, Any]:
    """Wall times of `jobfleet status RUN --json --ledger PATH`, `jobfleet --version` and
    `jobfleet status --help` (median of WARM_RUNS each, interleaved, after one untimed run each
    that fills the bytecode cache)."""
    executable = jobfleet_command()
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    commands = {
        "status": [executable, "status", str(run_id), "--json", "--ledger", str(path)],
        "version": [executable, "--version"],
        "help": [executable, "status", "--help"],
    }

    def timed(argv: list[str]) -> tuple[float, str]:
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return elapsed, done.stdout

    for argv in commands.values():
        timed(argv)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(WARM_RUNS):
        for name, argv in commands.items():
            elapsed, out = timed(argv)
            samples[name].append(elapsed)
            if name == "status" and json.loads(out)["state_counts"] != expected:
                raise SystemExit(f"jobfleet status printed other counts: {out[:500]}")
    status, version, help_ = (
        statistics.median(samples[name]) for name in ("status", "version", "help")
    )
    return {
        "command": " ".join(["jobfleet", *commands["status"][1:]]),
        "status_ms": ms(status),
        "version_ms": ms(version),
        "help_ms": ms(help_),
        "difference_ms": ms(status - version),
        "difference_from_help_ms": ms(status - help_),
        "samples_ms": {name: [ms(value) for value in values] for name, values in samples.items()},
    }


@dataclass
class StatusResult:
    generated: Generated
    events_per_instance: int
    ledger_bytes: int
    cold: dict[str, float]
    warm: dict[str, float]  # median of each step
    warm_totals: list[float]
    cli: dict[str, Any]
    plans: list[dict[str, Any]]
    kept: str | None


def total(times: dict[str, float]) -> float:
    return sum(times.values())


def status_at_scale(
    instances: int, events_per_instance: int, root: Path, keep: Path | None, plans: bool
) -> StatusResult:
    path = (keep or root) / "ledger.db"
    generated = generate(path, instances, events_per_instance)
    expected = {
        letter: generated.state_counts[letter]
        for letter in ("Q", "R", "D", "E")
        if generated.state_counts.get(letter)
    }
    run_ref = str(generated.run_id)
    evict(path)
    cold, output = status_once(path, run_ref)
    if output["state_counts"] != expected or output["task_counts"] != {
        key: generated.task_counts[key]
        for key in ("pending", "done", "failed")
        if generated.task_counts.get(key)
    }:
        raise SystemExit(f"status counts {output['state_counts']} {output['task_counts']}")
    runs = [status_once(path, run_ref)[0] for _ in range(WARM_RUNS)]
    warm = {name: statistics.median(run[name] for run in runs) for name in STATUS_STEPS}
    cli = cli_times(path, generated.run_id, root / "pycache", expected)
    return StatusResult(
        generated=generated,
        events_per_instance=events_per_instance,
        ledger_bytes=ledger_bytes(path),
        cold=cold,
        warm=warm,
        warm_totals=[total(run) for run in runs],
        cli=cli,
        plans=explain(path, run_ref) if plans else [],
        kept=str(path) if keep else None,
    )


# --- output ------------------------------------------------------------------------------------


def steps_text(times: dict[str, float]) -> str:
    return " | ".join(f"{name} {1000 * times[name]:.1f}" for name in STATUS_STEPS)


def end_to_end_report(result: EndToEnd, where: str) -> tuple[list[str], dict[str, Any]]:
    host = rate(result.tasks, result.total)
    alone = rate(result.tasks, result.baseline_seconds)
    rounds = ", ".join(f"{value:.2f}" for value in result.rounds)
    phases = " | ".join(f"{name} {value:.2f} s" for name, value in result.phases.items())
    met = host >= TASKS_PER_SECOND_TARGET
    lines = [
        f"end to end: {result.tasks} tasks of 'true' on the dummy backend, new SQLite ledger "
        f"under {where}",
        f"  host:        {host:9.0f} tasks/s in {result.total:6.2f} s ({phases}; "
        f"{len(result.rounds)} rounds: {rounds} s)",
        f"  dummy alone: {alone:9.0f} tasks/s in {result.baseline_seconds:6.2f} s "
        f"(arrays of {ARRAY_SIZE}, one bulk status query, exit info per instance)",
        f"  ratio host/dummy alone {host / alone:.4f} (the dummy alone is {alone / host:.0f}x "
        f"faster); ledger after the run {result.ledger_bytes / MIB:.1f} MiB "
        f"({result.ledger_bytes / result.tasks:.0f} bytes per task); opening and migrating the "
        f"new ledger {result.open_seconds:.2f} s (not counted)",
        f"  target >= {TASKS_PER_SECOND_TARGET:.0f} tasks/s end to end: "
        f"{'met' if met else 'NOT met'} ({host:.0f}/s)",
    ]
    data = {
        "tasks": result.tasks,
        "seconds": round(result.total, 3),
        "tasks_per_second": round(host, 1),
        "phases_seconds": {name: round(value, 3) for name, value in result.phases.items()},
        "rounds_seconds": [round(value, 3) for value in result.rounds],
        "baseline_seconds": round(result.baseline_seconds, 4),
        "baseline_tasks_per_second": round(alone, 1),
        "ratio": round(host / alone, 5),
        "ledger_bytes": result.ledger_bytes,
        "open_seconds": round(result.open_seconds, 3),
        "target_tasks_per_second": TASKS_PER_SECOND_TARGET,
        "target_met": met,
    }
    return lines, data


def status_report(result: StatusResult) -> tuple[list[str], dict[str, Any]]:
    generated, cli = result.generated, result.cli
    cold_ms, warm_ms = 1000 * total(result.cold), 1000 * statistics.median(result.warm_totals)
    warm_queries_ms = 1000 * sum(result.warm[name] for name in QUERY_STEPS)
    counts = " ".join(f"{key} {value}" for key, value in sorted(generated.state_counts.items()))
    tasks = " ".join(f"{key} {value}" for key, value in sorted(generated.task_counts.items()))

    def verdict(value: float) -> str:
        return f"{value:.0f} ms {'met' if value < STATUS_TARGET_MS else 'NOT met'}"

    lines = [
        f"status: run {generated.run_id} of {generated.instances} task instances ({counts}), "
        f"{generated.tasks} tasks ({tasks}), {generated.arrays} arrays, {generated.events} "
        f"events ({result.events_per_instance} per instance)",
        f"  ledger {result.ledger_bytes / MIB:.1f} MiB, generated in {generated.seconds:.0f} s"
        + (f", kept at {result.kept}" if result.kept else ""),
        f"  in process, cold (new Ledger, file out of the page cache): {cold_ms:7.1f} ms = "
        f"{steps_text(result.cold)}",
        f"  in process, warm (median of {WARM_RUNS}, new Ledger each): {warm_ms:7.1f} ms = "
        f"{steps_text(result.warm)}",
        f"    of which the queries (find_run … task_rows): {warm_queries_ms:.1f} ms",
        f"  CLI `{cli['command']}`: {cli['status_ms']:.0f} ms wall (median of {WARM_RUNS}); "
        f"`jobfleet --version` {cli['version_ms']:.0f} ms, difference "
        f"{cli['difference_ms']:.0f} ms; `jobfleet status --help` (the same imports, no "
        f"ledger) {cli['help_ms']:.0f} ms, difference {cli['difference_from_help_ms']:.0f} ms",
        f"  target status < {STATUS_TARGET_MS:.0f} ms: in process cold {verdict(cold_ms)}, "
        f"warm {verdict(warm_ms)}; CLI minus process start {verdict(cli['difference_ms'])}",
    ]
    for plan in result.plans:
        lines.append(f"  {plan['ms']:8.1f} ms  {plan['sql']}  {plan['parameters']}")
        lines.extend(f"               {line}" for line in plan["plan"])
    data = {
        "run_id": generated.run_id,
        "instances": generated.instances,
        "tasks": generated.tasks,
        "arrays": generated.arrays,
        "events": generated.events,
        "events_per_instance": result.events_per_instance,
        "state_counts": generated.state_counts,
        "task_counts": generated.task_counts,
        "generate_seconds": round(generated.seconds, 1),
        "ledger_bytes": result.ledger_bytes,
        "cold_ms": {name: ms(value) for name, value in result.cold.items()} | {"total": cold_ms},
        "warm_median_ms": {name: ms(value) for name, value in result.warm.items()}
        | {"total": round(warm_ms, 1)},
        "warm_totals_ms": [ms(value) for value in result.warm_totals],
        "cli": cli,
        "target_ms": STATUS_TARGET_MS,
        "target_met": {
            "in_process_cold": cold_ms < STATUS_TARGET_MS,
            "in_process_warm": warm_ms < STATUS_TARGET_MS,
            "cli_minus_start": cli["difference_ms"] < STATUS_TARGET_MS,
        },
        "plans": result.plans,
        "kept": result.kept,
    }
    return lines, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, help="tasks end to end (10000; --quick 1000)")
    parser.add_argument(
        "--instances", type=int, help="task instances of the status run (1000000; --quick 50000)"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1,
        choices=range(6),
        metavar="0-5",
        help="transition events per generated instance, its last ones (1; a real run has 4-5)",
    )
    parser.add_argument(
        "--part", choices=("all", "end-to-end", "status"), default="all", help="what to run"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--profile", action="store_true", help="profile one more end-to-end run (cProfile)"
    )
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN QUERY PLAN of the status statements"
    )
    parser.add_argument("--keep", type=Path, help="keep the generated ledger as DIR/ledger.db")
    parser.add_argument("--dir", help="where to make the temporary directory (the system's)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    args = parser.parse_args()
    tasks = args.tasks or (1000 if args.quick else 10_000)
    instances = args.instances or (50_000 if args.quick else 1_000_000)
    if tasks < 1 or instances < 1000:
        parser.error("--tasks must be at least 1 and --instances at least 1000")
    if args.keep is not None:
        if (args.keep / "ledger.db").exists():
            parser.error(f"{args.keep / 'ledger.db'} exists already")
        args.keep.mkdir(parents=True, exist_ok=True)

    for path in jobfleet.__path__:  # bytecode, as a wheel install leaves it
        compileall.compile_dir(path, quiet=1)
    # Every instance is over as soon as it is submitted, whatever the caller's environment.
    os.environ["JOBFLEET_DUMMY_REPORT_DELAY"] = "0"
    os.environ["JOBFLEET_DUMMY_FAIL_EVERY"] = "0"
    parent = os.path.realpath(args.dir or tempfile.gettempdir())
    where = f"{parent} ({file_system_of(parent)})"
    report: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "directory": where,
    }

    def show(lines: list[str]) -> None:
        if not args.json:
            print("\n".join(lines), flush=True)

    if args.part in ("all", "end-to-end"):
        with tempfile.TemporaryDirectory(prefix="jobfleet-bench-host-", dir=parent) as root:
            end_to_end(min(tasks, 50), Path(root) / "warm-up")  # imports, first-time costs
        with tempfile.TemporaryDirectory(prefix="jobfleet-bench-host-", dir=parent) as root:
            result = end_to_end(tasks, Path(root))
        result.baseline_seconds = min(dummy_alone(tasks) for _ in range(3))
        lines, report["end_to_end"] = end_to_end_report(result, where)
        show(lines)
        if args.profile:
            ours, overall = profile_end_to_end(tasks, parent)
            report["end_to_end"]["profile"] = {"jobfleet_cumulative": ours, "tottime": overall}
            show(
                [
                    "  cProfile of one more run, jobfleet's code by cumulative time:",
                    ours,
                    "  …and everything by own time:",
                    overall,
                ]
            )
    if args.part in ("all", "status"):
        with tempfile.TemporaryDirectory(prefix="jobfleet-bench-host-", dir=parent) as root:
            status = status_at_scale(instances, args.events, Path(root), args.keep, args.explain)
        lines, report["status"] = status_report(status)
        show(lines)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
