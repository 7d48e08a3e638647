"""The ledger's read-only queries (`jobfleet.core.host.queries`), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.orm import Session

from jobfleet.core.exit_info import ExitReason, ExitRecord
from jobfleet.core.host import queries
from jobfleet.core.host.ledger import (
    Cluster,
    Ledger,
    Run,
    Task,
    TaskInstance,
    add_instance,
    record_event,
    transition,
    utcnow,
)
from jobfleet.core.host.queries import NotFoundError
from jobfleet.core.resources import MIB
from jobfleet.core.testing.host import wait_for

LIVE_OWNER = "host:1"
CRASHED_OWNER = "host:2"
# A path through the transition table to each ending or current state, from Q.
PATHS = {"Q": "", "I": "I", "R": "IOR", "D": "IORD", "E": "IORE", "Z": "IORZ", "K": "K"}


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    yield opened
    opened.close()


def new_run(session: Session, name: str = "run", **values: Any) -> Run:
    cluster = session.scalar(select(Cluster).where(Cluster.name == "local"))
    if cluster is None:
        cluster = Cluster(name="local", cluster_type="dummy")
        session.add(cluster)
        session.flush()
    run = Run(name=name, cluster_id=cluster.id, **values)
    session.add(run)
    session.flush()
    return run


def new_task(
    session: Session, run: Run, name: str, *, memory: str = "100M", state: str = "pending"
) -> Task:
    task = Task(
        run_id=run.id,
        name=name,
        command=f"echo {name}",
        resources={"memory": memory},
        max_attempts=5,
        state=state,
    )
    session.add(task)
    session.flush()
    return task


def attempt(
    session: Session,
    task: Task,
    to: str,
    *,
    memory: str | None = None,
    reason: ExitReason | None = None,
    **usage: Any,
) -> TaskInstance:
    """A new attempt of `task`, moved to state `to`, with usage columns set."""
    resources = {"memory": memory or task.resources["memory"], "cores": 1, "queue": "all"}
    instance = add_instance(session, task, resources)
    for letter in PATHS[to]:
        transition(session, instance, letter, f"to {letter}")
    if reason is not None:
        instance.exit_record = ExitRecord(reason, exit_code=1).to_dict()
    for key, value in usage.items():
        setattr(instance, key, value)
    session.flush()
    return instance


def count_statements(engine: Engine) -> list[str]:
    """The queries (not BEGIN and the like) the engine runs from now on, as a growing list."""
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    return statements


# --- find_run and find_instance -------------------------------------------------------------


def test_find_run_by_id_by_name_and_by_a_name_made_of_digits(ledger: Ledger) -> None:
    with ledger.session() as session:
        first = new_run(session, "nightly").id
        digits = new_run(session, "4242").id
    with ledger.read_session() as session:
        assert queries.find_run(session, first).id == first
        assert queries.find_run(session, str(first)).id == first
        assert queries.find_run(session, "nightly").id == first
        # No run has the id 4242: the text is then tried as a name.
        assert queries.find_run(session, "4242").id == digits


def test_missing_run_names_the_ledger(ledger: Ledger) -> None:
    with ledger.read_session() as session:
        with pytest.raises(NotFoundError, match=r"There is no run 12 in the ledger at ") as by_id:
            queries.find_run(session, 12)
        with pytest.raises(NotFoundError, match=r"no run named 'nope'"):
            queries.find_run(session, "nope")
        with pytest.raises(NotFoundError, match=r"no run 13 in the ledger"):
            queries.find_run(session, "13")
    assert ledger.safe_url in str(by_id.value)
    assert "s3cret" not in str(by_id.value)


def test_ambiguous_run_name_lists_the_ids(ledger: Ledger) -> None:
    with ledger.session() as session:
        ids = [new_run(session, "x").id for _ in range(3)]
        new_run(session, "y")
    with ledger.read_session() as session:
        with pytest.raises(NotFoundError) as raised:
            queries.find_run(session, "x")
        assert queries.find_run(session, "y").name == "y"
    assert str(raised.value) == (f"3 runs are named 'x': use an id: {ids[0]}, {ids[1]}, {ids[2]}.")


def test_find_instance(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        instance_id = attempt(session, new_task(session, run, "a"), "R").id
    with ledger.read_session() as session:
        assert queries.find_instance(session, instance_id).state == "R"
        with pytest.raises(NotFoundError, match=rf"no task instance {instance_id + 1} in the"):
            queries.find_instance(session, instance_id + 1)


# --- runs -----------------------------------------------------------------------------------


def test_run_summaries_newest_first_with_counts_and_owner(ledger: Ledger) -> None:
    now = utcnow()
    with ledger.session() as session:
        old = new_run(session, "old", created_at=now - timedelta(days=2), status="done")
        old.finished_at = now - timedelta(days=1)
        for name, state in [("a", "done"), ("b", "done"), ("c", "failed"), ("d", "killed")]:
            new_task(session, old, name, state=state)
        live = new_run(
            session,
            "live",
            created_at=now - timedelta(hours=1),
            status="running",
            owner_token=LIVE_OWNER,
            lease_expires_at=now + timedelta(minutes=1),
        )
        for name in "pq":
            new_task(session, live, name)
        new_task(session, live, "r", state="done")
        new_run(
            session,
            "orphan",
            created_at=now - timedelta(minutes=1),
            status="running",
            owner_token=CRASHED_OWNER,
            lease_expires_at=now - timedelta(seconds=1),
        )
        old_id = old.id
    statements = count_statements(ledger.engine)
    with ledger.read_session() as session:
        summaries = queries.run_summaries(session)
    assert len(statements) == 2  # the runs, and one GROUP BY for all their tasks
    assert [s.name for s in summaries] == ["orphan", "live", "old"]
    orphan, live, old_summary = summaries
    assert (old_summary.id, old_summary.status, old_summary.cluster) == (old_id, "done", "local")
    assert (
        old_summary.tasks_total,
        old_summary.tasks_done,
        old_summary.tasks_failed,
        old_summary.tasks_killed,
        old_summary.tasks_pending,
    ) == (4, 2, 1, 1, 0)
    assert (live.tasks_total, live.tasks_pending, live.tasks_done) == (3, 2, 1)
    assert (orphan.tasks_total, orphan.tasks_pending) == (0, 0)
    assert (live.owner_active, live.owner_token) == (True, LIVE_OWNER)
    assert (orphan.owner_active, orphan.owner_token) == (False, CRASHED_OWNER)
    assert (old_summary.owner_active, old_summary.owner_token) == (False, None)
    as_dict = old_summary.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["created_at"] == (now - timedelta(days=2)).isoformat()
    assert as_dict["finished_at"].endswith("+00:00")
    with ledger.read_session() as session:
        assert [s.name for s in queries.run_summaries(session, limit=2)] == ["orphan", "live"]
        assert queries.run_summary(session, session.get_one(Run, old_id)) == old_summary


def test_a_run_whose_owner_on_this_machine_is_dead_is_orphaned_not_active(ledger: Ledger) -> None:
    here = socket.gethostname()
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: no process has its pid (until the pid is used again)
    zombie = subprocess.Popen(["sleep", "300"])
    zombie.send_signal(signal.SIGKILL)  # dead, but not reaped yet: still in the process table
    stat = Path(f"/proc/{zombie.pid}/stat")
    wait_for(lambda: stat.read_bytes().rpartition(b")")[2].split()[0] == b"Z", "a zombie")
    owners = {
        "gone": f"{here}:{gone.pid}:0000",
        "zombie": f"{here}:{zombie.pid}:0000",
        "alive": f"{here}:{os.getpid()}:0000",
        "elsewhere": f"{here}-other:{gone.pid}:0000",  # another machine's pid says nothing
    }
    lease = utcnow() + timedelta(minutes=1)
    try:
        with ledger.session() as session:
            for name, owner in owners.items():
                new_run(session, name, owner_token=owner, lease_expires_at=lease)
        with ledger.read_session() as session:
            summaries = {s.name: s for s in queries.run_summaries(session)}
    finally:
        zombie.wait()
    found = {name: (s.owner_active, s.owner_orphaned) for name, s in summaries.items()}
    assert found == {
        "gone": (False, True),
        "zombie": (False, True),
        "alive": (True, False),
        "elsewhere": (True, False),
    }
    assert summaries["gone"].to_dict()["owner_orphaned"] is True


def test_state_and_task_counts(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        for index, to in enumerate(["D", "D", "R", "Q", "Z", "E"]):
            task = new_task(session, run, f"t{index}", state="done" if to == "D" else "pending")
            attempt(session, task, to)
        failed = new_task(session, run, "gone", state="failed")
        attempt(session, failed, "E")
        # Another run's instances are not counted.
        attempt(session, new_task(session, new_run(session, "other"), "o"), "R")
        run_id = run.id
    with ledger.read_session() as session:
        states = queries.state_counts(session, run_id)
        tasks = queries.task_counts(session, run_id)
        summary_counts = queries.run_summary(session, queries.find_run(session, run_id))
        assert queries.state_counts(session, run_id + 100) == {}
    # `status` takes the task counts from the summary, which counted them already.
    assert summary_counts.task_counts() == tasks
    assert states == {"Q": 1, "R": 1, "D": 2, "E": 2, "Z": 1}
    assert list(states) == ["Q", "R", "D", "E", "Z"]  # the table's order, zeros left out
    assert tasks == {"pending": 4, "done": 2, "failed": 1}
    assert list(tasks) == ["pending", "done", "failed"]


# --- tasks ----------------------------------------------------------------------------------


def test_task_rows_show_the_latest_attempt(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        retried = new_task(session, run, "retried", state="done")
        attempt(session, retried, "Z", reason=ExitReason.OOM, maxrss=100 * MIB, memory="100M")
        attempt(session, retried, "E", reason=ExitReason.FAILED, memory="150M")
        attempt(
            session,
            retried,
            "D",
            memory="1536M",
            maxrss=120 * MIB,
            cpu=3.5,
            wallclock=4.25,
            hostname="node1",
        )
        running = new_task(session, run, "running")
        attempt(session, running, "R", hostname="node2")
        never = new_task(session, run, "never")
        other = new_run(session, "other")
        attempt(session, new_task(session, other, "elsewhere"), "D")
        run_id, ids = run.id, [retried.id, running.id, never.id]
    statements = count_statements(ledger.engine)
    with ledger.read_session() as session:
        rows = queries.task_rows(session, run_id)
    assert len(statements) == 1
    assert [row.task_id for row in rows] == ids
    first, second, third = rows
    assert (first.name, first.task_state, first.instance_state, first.attempts) == (
        "retried",
        "done",
        "D",
        3,
    )
    assert first.exit_reason is None  # the latest attempt's, not an earlier one's
    assert (first.maxrss, first.cpu, first.wallclock) == (120 * MIB, 3.5, 4.25)
    assert first.requested_memory == 1536 * MIB
    assert first.hostname == "node1"
    assert (second.instance_state, second.attempts, second.hostname) == ("R", 1, "node2")
    assert (third.instance_id, third.instance_state, third.attempts) == (None, None, 0)
    assert third.requested_memory is None
    assert json.loads(json.dumps(first.to_dict()))["requested_memory"] == 1536 * MIB


def test_task_rows_exit_reason_and_paging(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        tasks = [new_task(session, run, f"t{index}") for index in range(7)]
        for task in tasks:
            attempt(session, task, "D")
        attempt(session, tasks[3], "Z", reason=ExitReason.OOM)  # attempt 2 of t3
        run_id = run.id
    with ledger.read_session() as session:
        page = queries.task_rows(session, run_id, limit=3, offset=2)
        rest = queries.task_rows(session, run_id, limit=10, offset=5)
    assert [row.name for row in page] == ["t2", "t3", "t4"]
    assert (page[1].attempts, page[1].instance_state, page[1].exit_reason) == (2, "Z", "oom")
    assert [row.name for row in rest] == ["t5", "t6"]


def test_run_highlights_rank_latest_attempts_and_cut_every_list(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        for index in range(12):
            task = new_task(session, run, f"t{index}", state="done")
            attempt(session, task, "D", wallclock=float(index), maxrss=(12 - index) * MIB)
        slow_first = new_task(session, run, "was-slow", state="done")
        attempt(session, slow_first, "E", wallclock=1000.0, maxrss=1000 * MIB)
        attempt(session, slow_first, "D", wallclock=0.5, maxrss=MIB // 2)  # the latest counts
        for index in range(4):
            new_task(session, run, f"bad{index}", state="failed" if index % 2 else "killed")
        attempt(session, new_task(session, run, "pending"), "R")
        run_id = run.id
    with ledger.read_session() as session:
        found = queries.run_highlights(session, run_id, limit=3)
    assert [row.name for row in found.not_done] == ["bad0", "bad1", "bad2"]
    assert found.not_done_total == 5
    assert [row.name for row in found.slowest] == ["t11", "t10", "t9"]
    assert [row.name for row in found.hungriest] == ["t0", "t1", "t2"]
    assert [row.wallclock for row in found.slowest] == [11.0, 10.0, 9.0]
    assert json.loads(json.dumps(found.to_dict()))["not_done_total"] == 5


def test_unreadable_requested_memory_is_none(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        task = new_task(session, run, "odd")
        instance = add_instance(session, task, {"memory": 12})  # a bare number: ambiguous
        run_id, instance_id = run.id, instance.id
    with ledger.read_session() as session:
        (row,) = queries.task_rows(session, run_id)
    assert (row.instance_id, row.requested_memory) == (instance_id, None)


def _fill_big_run(session: Session, tasks: int, attempts: int) -> int:
    run = new_run(session, "big")
    other = new_run(session, "other")
    session.execute(
        insert(Task),
        [
            {"run_id": run_id, "name": f"t{i}", "command": "true", "state": "done"}
            for run_id in (other.id, run.id)
            for i in range(tasks // 10 if run_id == other.id else tasks)
        ],
    )
    task_ids = session.scalars(select(Task.id).where(Task.run_id == run.id).order_by(Task.id))
    session.execute(
        insert(TaskInstance),
        [
            {
                "task_id": task_id,
                "run_id": run.id,
                "attempt": number,
                "state": "D" if number == attempts else "Z",
                "requested_resources": {"memory": f"{100 * number}M"},
                "maxrss": 1000 * number,
            }
            for task_id in task_ids
            for number in range(1, attempts + 1)
        ],
    )
    return run.id


def assert_indexed_page_plan(plan: list[str]) -> None:
    """SQLite's plan of a task_rows page reads the page's tasks and instances by index only."""
    described = "\n".join(plan)
    # No full scan of either table.
    assert not [line for line in plan if re.match(r"SCAN (tasks|task_instances)\b", line)], (
        described
    )
    assert re.search(r"SEARCH tasks USING (COVERING )?INDEX ix_tasks_run_id", described), described
    instance_searches = [line for line in plan if line.startswith("SEARCH task_instances")]
    # max(attempt), then the latest row: both looked up by task id in the unique
    # (task_id, attempt) index. A search by run_id alone would read every instance of the run.
    assert len(instance_searches) == 2, described
    for line in instance_searches:
        assert re.search(r"USING (COVERING )?INDEX \w+ \(task_id=\?", line), described


def test_task_rows_page_uses_indexes_on_sqlite(tmp_path: Any) -> None:
    """A page of 20 tasks of a 50,000-instance run reads the page's rows only, by index."""
    with Ledger.open(tmp_path / "big.db") as ledger:
        with ledger.session() as session:
            run_id = _fill_big_run(session, tasks=25_000, attempts=2)
        statement = queries.task_rows_statement(run_id, limit=20, offset=1000)
        compiled = statement.compile(ledger.engine, compile_kwargs={"literal_binds": True})
        with ledger.engine.connect() as connection:
            plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
        with ledger.read_session() as session:
            rows = queries.task_rows(session, run_id, limit=20, offset=1000)
    assert_indexed_page_plan(plan)
    assert len(rows) == 20
    assert [row.name for row in rows] == [f"t{i}" for i in range(1000, 1020)]
    assert {(row.attempts, row.instance_state, row.maxrss) for row in rows} == {(2, "D", 2000)}
    assert {row.requested_memory for row in rows} == {200 * MIB}


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_task_rows_page_plan_on_each_backend(ledger: Ledger) -> None:
    """The same page on PostgreSQL (after ANALYZE): no sequential scan of the instances."""
    with ledger.session() as session:
        run_id = _fill_big_run(session, tasks=10_000, attempts=3)
    statement = queries.task_rows_statement(run_id, limit=20)
    compiled = statement.compile(ledger.engine, compile_kwargs={"literal_binds": True})
    with ledger.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
            (document,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}").one()
            plan = document if isinstance(document, list) else json.loads(document)
            reads = [
                (node["Node Type"], node.get("Index Name"))
                for node in plan_nodes(plan[0]["Plan"])
                if node.get("Relation Name") == "task_instances"
            ]
            # Both reads of the instances go through the unique (task_id, attempt) index.
            assert len(reads) == 2, plan
            for node_type, index in reads:
                assert node_type in ("Index Scan", "Index Only Scan"), plan
                assert index == "uq_task_instances_task_id_attempt", plan
        else:
            assert_indexed_page_plan(
                [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
            )
    with ledger.read_session() as session:
        rows = queries.task_rows(session, run_id, limit=20)
    assert [row.attempts for row in rows] == [3] * 20
    assert [row.name for row in rows] == [f"t{i}" for i in range(20)]


# --- usage ----------------------------------------------------------------------------------


def test_usage_rows_flags_and_memory_by_attempt(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        wasteful = new_task(session, run, "wasteful", memory="1G")
        attempt(session, wasteful, "D", maxrss=100 * MIB, cpu=2.0, wallclock=3.0)
        scaled = new_task(session, run, "scaled")
        attempt(session, scaled, "Z", reason=ExitReason.OOM, maxrss=100 * MIB, memory="100M")
        attempt(session, scaled, "D", maxrss=120 * MIB, memory="150M", cpu=1.5)
        tight = new_task(session, run, "tight")
        attempt(session, tight, "D", maxrss=95 * MIB)
        fine = new_task(session, run, "fine")
        attempt(session, fine, "D", maxrss=60 * MIB)
        small = new_task(session, run, "small", memory="32M")
        attempt(session, small, "D", maxrss=1 * MIB)  # twice over, but under 64M: not flagged
        # The latest attempt has not reported usage yet: the earlier one is shown.
        pending = new_task(session, run, "pending")
        attempt(session, pending, "E", maxrss=60 * MIB, memory="100M")
        attempt(session, pending, "R", memory="100M")
        silent = new_task(session, run, "silent")
        attempt(session, silent, "R")
        run_id = run.id
    with ledger.read_session() as session:
        rows = {row.name: row for row in queries.usage_rows(session, run_id)}
    assert list(rows) == ["wasteful", "scaled", "tight", "fine", "small", "pending"]
    assert rows["wasteful"].flag == queries.OVER_REQUESTED == "over-requested"
    assert rows["scaled"].flag == queries.RESOURCE_RETRIED == "resource-retried"
    assert rows["tight"].flag == queries.NEAR_LIMIT == "near limit"
    assert rows["fine"].flag is None
    assert rows["small"].flag is None
    assert rows["pending"].flag is None
    scaled_row = rows["scaled"]
    assert scaled_row.memory_by_attempt == ("100M", "150M")
    assert (scaled_row.attempt, scaled_row.attempts, scaled_row.state) == (2, 2, "D")
    assert (scaled_row.requested_memory, scaled_row.maxrss) == (150 * MIB, 120 * MIB)
    assert scaled_row.cpu == 1.5
    assert (rows["pending"].attempt, rows["pending"].attempts) == (1, 2)
    assert rows["pending"].maxrss == 60 * MIB
    assert rows["wasteful"].memory_by_attempt == ("1G",)
    as_dict = scaled_row.to_dict()
    assert as_dict["memory_by_attempt"] == ["100M", "150M"]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_resource_retry_flag_needs_an_earlier_z(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        task = new_task(session, run, "t")
        # The Z attempt itself is the latest with usage: nothing was retried yet.
        attempt(session, task, "Z", reason=ExitReason.OOM, maxrss=99 * MIB)
        attempt(session, task, "Q", memory="150M")
        run_id = run.id
    with ledger.read_session() as session:
        (row,) = queries.usage_rows(session, run_id)
    assert (row.attempt, row.attempts) == (1, 2)
    assert row.flag == "near limit"
    assert row.memory_by_attempt == ("100M", "150M")


# --- events ---------------------------------------------------------------------------------


def test_events_in_order_filtered_and_paged(ledger: Ledger) -> None:
    with ledger.session() as session:
        run = new_run(session)
        first = attempt(session, new_task(session, run, "a"), "R")
        second = attempt(session, new_task(session, run, "b"), "Q")
        record_event(
            session,
            run.id,
            "adjustment",
            "memory clamped",
            details={"from": {"memory": "2G"}, "to": {"memory": "1G"}, "adjustments": []},
            instance=second,
        )
        record_event(session, run.id, "note", "service started")
        other = new_run(session, "other")
        attempt(session, new_task(session, other, "x"), "R")
        run_id, first_id, second_id = run.id, first.id, second.id
    with ledger.read_session() as session:
        everything = queries.events(session, run_id)
        after = queries.events(session, run_id, after_id=everything[2].id)
        mine = queries.events(session, run_id, instance_id=second_id)
        two = queries.events(session, run_id, limit=2)
    ids = [row.id for row in everything]
    assert ids == sorted(ids)
    assert {row.run_id for row in everything} == {run_id}
    assert [(row.from_state, row.to_state) for row in everything[:4]] == [
        (None, "Q"),
        ("Q", "I"),
        ("I", "O"),
        ("O", "R"),
    ]
    assert [row.kind for row in everything[-2:]] == ["adjustment", "note"]
    assert (everything[0].task_name, everything[0].attempt, everything[0].task_id) == (
        "a",
        1,
        everything[0].task_id,
    )
    assert everything[0].instance_id == first_id
    note = everything[-1]
    assert (note.instance_id, note.task_name, note.attempt, note.message) == (
        None,
        None,
        None,
        "service started",
    )
    assert [row.id for row in after] == ids[3:]
    assert [row.kind for row in mine] == ["transition", "adjustment"]
    assert {row.instance_id for row in mine} == {second_id}
    assert mine[1].details["to"] == {"memory": "1G"}
    assert [row.id for row in two] == ids[:2]
    as_dict = mine[1].to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["at"].endswith("+00:00")
