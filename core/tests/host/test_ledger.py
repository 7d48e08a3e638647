"""The ledger on SQLite and on a real PostgreSQL server (see conftest.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, delete, func, inspect, select, text, update
from sqlalchemy.orm import Session

from jobfleet.core.exit_info import ExitReason, ExitRecord
from jobfleet.core.host.ledger import (
    TRANSITIONS,
    Array,
    Base,
    Change,
    Cluster,
    Event,
    InstanceState,
    LeaseError,
    Ledger,
    LedgerError,
    Queue,
    Run,
    RunCount,
    Task,
    TaskInstance,
    TransitionError,
    acquire_lease,
    add_instance,
    apply_changes,
    record_event,
    release_lease,
    renew_lease,
    take_over_lease,
    transition,
    utcnow,
)
from jobfleet.core.host.ledger.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    quick_head,
)

S = InstanceState
# A path through the table to each state, from a fresh (Q) instance.
PATH_TO = {
    S.QUEUED: "",
    S.INSTANTIATED: "I",
    S.LAUNCHED: "IO",
    S.RUNNING: "IOR",
    S.DONE: "IORD",
    S.ERROR_RECOVERABLE: "IORE",
    S.RESOURCE_ERROR: "IORZ",
    S.UNKNOWN_ERROR: "IORU",
    S.NO_DISTRIBUTOR_ID: "IW",
    S.TRIAGING: "IORT",
    S.NO_HEARTBEAT: "IOX",
    S.KILL_SELF: "K",
    S.ERROR_FATAL: "IORF",
}


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    yield opened
    opened.close()


def new_task(session: Session, *, max_attempts: int = 3, name: str = "t") -> Task:
    cluster = session.scalar(select(Cluster).where(Cluster.name == "local"))
    if cluster is None:
        cluster = Cluster(name="local", cluster_type="dummy")
        session.add(cluster)
        session.flush()
    run = Run(name="run", cluster_id=cluster.id)
    session.add(run)
    session.flush()
    task = Task(
        run_id=run.id,
        name=name,
        command="echo hi",
        resources={"memory": "1G", "cores": 1},
        max_attempts=max_attempts,
    )
    session.add(task)
    session.flush()
    return task


def instance_in(ledger: Ledger, state: InstanceState) -> int:
    with ledger.session() as session:
        instance = add_instance(session, new_task(session))
        for letter in PATH_TO[state]:
            transition(session, instance, letter)
        return instance.id


# --- opening and migrations ---------------------------------------------------------------


def test_open_applies_the_migrations(ledger: Ledger) -> None:
    tables = set(inspect(ledger.engine).get_table_names())
    assert tables == {*Base.metadata.tables, "alembic_version"}
    with ledger.engine.connect() as connection:
        assert current_revision(connection) == head_revision() == "0006"


def test_the_migration_files_are_read_as_alembic_reads_them() -> None:
    # Opening a current ledger compares with `quick_head`, which reads the files' text instead
    # of importing Alembic: it must agree with Alembic on every revision.
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    assert known_revisions() == {
        script.revision: script.down_revision for script in scripts.walk_revisions()
    }
    assert quick_head() == head_revision()


def test_migrated_schema_is_the_models_schema(ledger: Ledger) -> None:
    with ledger.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_hot_query_indexes_exist(ledger: Ledger) -> None:
    indexes = {
        tuple(index["column_names"])
        for index in inspect(ledger.engine).get_indexes("task_instances")
    }
    assert ("run_id", "state") in indexes
    assert ("distributor_id",) in indexes


def test_a_database_of_another_application_is_refused(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        with pytest.raises(LedgerError, match=r"is not a jobfleet ledger: it has tables \(notes\)"):
            Ledger.open(ledger_url)
        # Nothing was added to it.
        assert set(inspect(engine).get_table_names()) == {"notes"}
    finally:
        engine.dispose()


def test_a_schema_revision_jobfleet_does_not_know_is_refused(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            connection.execute(text("INSERT INTO alembic_version VALUES ('f00d')"))
        with pytest.raises(LedgerError, match="revision 'f00d', which this jobfleet does not"):
            Ledger.open(ledger_url)
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_reopening_is_idempotent_and_keeps_data(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as first, first.session() as session:
        task_id = new_task(session).id
    for _ in range(2):
        with Ledger.open(ledger_url) as again, again.read_session() as session:
            assert session.get(Task, task_id) is not None
            assert session.scalar(select(func.count()).select_from(Task)) == 1


def test_concurrent_first_opens_of_a_new_database(ledger_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Ledger.open(ledger_url).close()
        except BaseException as exc:  # collected and reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Ledger.open(ledger_url) as ledger, ledger.engine.connect() as connection:
        assert current_revision(connection) == head_revision()


def test_processes_racing_to_create_the_schema(ledger_url: str) -> None:
    script = "import sys; from jobfleet.core.host.ledger import Ledger; Ledger.open(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, ledger_url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    failures = [p.stderr.read() for p in processes if p.wait(timeout=60) and p.stderr]
    assert failures == []
    with Ledger.open(ledger_url) as ledger, ledger.engine.connect() as connection:
        assert current_revision(connection) == head_revision()


# --- transitions and events -----------------------------------------------------------------


def test_happy_path_logs_every_transition(ledger: Ledger) -> None:
    with ledger.session() as session:
        instance = add_instance(session, new_task(session))
        for letter in "IOR":
            transition(session, instance, letter, f"to {letter}")
        instance.distributor_id = "123"
        transition(session, instance, S.DONE, "finished", details={"exit_code": 0})
        instance_id = instance.id
    with ledger.read_session() as session:
        stored = session.get_one(TaskInstance, instance_id)
        assert stored.state == "D"
        assert stored.distributor_id == "123"
        stamps = stored.submitted_at, stored.started_at, stored.ended_at
        assert None not in stamps
        assert sorted(stamps) == list(stamps)  # type: ignore[type-var]
        events = session.scalars(
            select(Event).where(Event.task_instance_id == instance_id).order_by(Event.id)
        ).all()
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "Q"), ("Q", "I"), ("I", "O"), ("O", "R"), ("R", "D"),
    ]  # fmt: skip
    assert {e.kind for e in events} == {"transition"}
    assert events[-1].message == "finished"
    assert events[-1].details == {"exit_code": 0}
    assert events[-1].at.tzinfo is not None


@pytest.mark.parametrize("source", list(InstanceState), ids=str)
def test_every_forbidden_transition_raises(ledger: Ledger, source: InstanceState) -> None:
    forbidden = [target for target in InstanceState if target not in TRANSITIONS[source]]
    for target in forbidden:
        instance_id = instance_in(ledger, source)
        with pytest.raises(TransitionError) as caught, ledger.session() as session:
            transition(session, session.get_one(TaskInstance, instance_id), target)
        assert f"from {source.value} to {target.value}" in str(caught.value)
        assert (caught.value.from_state, caught.value.to_state) == (source.value, target.value)
        with ledger.read_session() as session:
            assert session.get_one(TaskInstance, instance_id).state == source.value
            last = session.scalars(
                select(Event).where(Event.task_instance_id == instance_id).order_by(Event.id.desc())
            ).first()
        assert last is not None
        assert last.to_state == source.value  # nothing was appended for the refused move


@pytest.mark.parametrize("target", list(InstanceState), ids=str)
def test_every_allowed_transition_from_every_state(ledger: Ledger, target: InstanceState) -> None:
    sources = [source for source in InstanceState if target in TRANSITIONS[source]]
    for source in sources:
        instance_id = instance_in(ledger, source)
        with ledger.session() as session:
            event = transition(session, session.get_one(TaskInstance, instance_id), target)
        assert (event.from_state, event.to_state) == (source.value, target.value)


def test_unknown_letter_is_refused(ledger: Ledger) -> None:
    instance_id = instance_in(ledger, S.QUEUED)
    with pytest.raises(TransitionError, match="not a state"), ledger.session() as session:
        transition(session, session.get_one(TaskInstance, instance_id), "Y")


def test_transition_and_event_roll_back_together(ledger: Ledger) -> None:
    instance_id = instance_in(ledger, S.QUEUED)

    def crash_before_commit() -> None:
        with ledger.session() as session:
            transition(session, session.get_one(TaskInstance, instance_id), S.INSTANTIATED)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with ledger.read_session() as session:
        assert session.get_one(TaskInstance, instance_id).state == "Q"
        count = select(func.count()).where(Event.task_instance_id == instance_id)
        assert session.scalar(count) == 1


def test_stale_state_is_detected(ledger: Ledger) -> None:
    # Two services read the same running instance; only the first to write wins.
    instance_id = instance_in(ledger, S.RUNNING)
    with ledger.read_session() as session:
        stale = session.get_one(TaskInstance, instance_id)
    with ledger.session() as session:
        transition(session, session.get_one(TaskInstance, instance_id), S.DONE)
    with pytest.raises(TransitionError, match="changed it first"), ledger.session() as session:
        transition(session, session.merge(stale, load=False), S.ERROR_RECOVERABLE)


def test_attempts_are_numbered_and_bounded(ledger: Ledger) -> None:
    with ledger.session() as session:
        task = new_task(session, max_attempts=2)
        first = add_instance(session, task)
        transition(session, first, S.INSTANTIATED)
        transition(session, first, S.NO_DISTRIBUTOR_ID)
        second = add_instance(session, task, {"memory": "2G"})
        assert (first.attempt, second.attempt) == (1, 2)
        assert second.requested_resources == {"memory": "2G"}
        with pytest.raises(LedgerError, match="used all of its 2 attempts"):
            add_instance(session, task)


def test_adjustments_are_logged_and_the_log_is_append_only(ledger: Ledger) -> None:
    instance_id = instance_in(ledger, S.QUEUED)
    with ledger.session() as session:
        instance = session.get_one(TaskInstance, instance_id)
        record_event(
            session, instance.run_id, "adjustment", "memory clamped to the queue maximum",
            details={"field": "memory", "from": "64G", "to": "32G"}, instance=instance,
        )  # fmt: skip
    with ledger.session() as session:
        event = session.scalars(select(Event).where(Event.kind == "adjustment")).one()
        assert event.details == {"field": "memory", "from": "64G", "to": "32G"}
        event.message = "rewritten"
        with pytest.raises(LedgerError, match="append-only"):
            session.flush()
        session.rollback()
    with pytest.raises(LedgerError, match="transition"), ledger.session() as session:
        record_event(session, 1, "transition", "forged")


# --- JSON columns ------------------------------------------------------------------------


def test_json_columns_round_trip(ledger: Ledger) -> None:
    record = ExitRecord(ExitReason.OOM, exit_code=137, signal=9, raw_state="OUT_OF_MEMORY")
    resources = {"memory": "4G", "cores": 2.5, "runtime": 3600, "extra": {"nested": [1, "x"]}}
    with ledger.session() as session:
        task = new_task(session)
        cluster = session.get_one(Cluster, session.get_one(Run, task.run_id).cluster_id)
        queue = Queue(cluster_id=cluster.id, name="all.q", parameters={"max_memory": "1T"})
        session.add(queue)
        session.flush()
        array = Array(
            run_id=task.run_id, queue_id=queue.id, resources=resources, size=2,
            distributor_id="77", distributor_ids={"0": "77_0", "1": "77_1"},
        )  # fmt: skip
        session.add(array)
        session.flush()
        instance = add_instance(session, task, resources)
        instance.array_id, instance.array_step = array.id, 1
        for letter in "IORZ":
            transition(session, instance, letter)
        instance.exit_record = record.to_dict()
        instance.maxrss, instance.cpu, instance.wallclock = 5 * 1024**3, 12.5, 30.25
        instance.usage_str = "maxrss=5G cpu=12.5s"
        ids = instance.id, array.id, queue.id
    with ledger.read_session() as session:
        stored = session.get_one(TaskInstance, ids[0])
        assert ExitRecord.from_dict(stored.exit_record or {}) == record
        assert stored.requested_resources == resources
        assert (stored.maxrss, stored.cpu, stored.wallclock) == (5 * 1024**3, 12.5, 30.25)
        assert stored.usage_str == "maxrss=5G cpu=12.5s"
        assert (stored.array_id, stored.array_step) == (ids[1], 1)
        assert session.get_one(Array, ids[1]).distributor_ids == {"0": "77_0", "1": "77_1"}
        assert session.get_one(Queue, ids[2]).parameters == {"max_memory": "1T"}


# --- leases -----------------------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(ledger: Ledger) -> None:
    with ledger.session() as session:
        run_id = new_task(session).run_id
    now = utcnow()
    minute = timedelta(minutes=1)
    with ledger.session() as session:
        assert acquire_lease(session, run_id, "alpha", duration=minute, now=now) == now + minute
    with pytest.raises(LeaseError, match="owned by 'alpha'") as caught, ledger.session() as s:
        acquire_lease(s, run_id, "beta", duration=minute, now=now + minute / 2)
    assert caught.value.owner == "alpha"
    with ledger.session() as session:  # the owner renews; re-acquiring its own run works too
        renew_lease(session, run_id, "alpha", duration=minute, now=now + minute / 2)
        acquire_lease(session, run_id, "alpha", duration=minute, now=now + minute / 2)
    later = now + 2 * minute  # alpha crashed and stopped renewing
    with ledger.session() as session:
        acquire_lease(session, run_id, "beta", duration=minute, now=later)
        holder = session.get_one(Run, run_id).owner_token
    assert holder == "beta"
    with pytest.raises(LeaseError, match="lease lost"), ledger.session() as session:
        renew_lease(session, run_id, "alpha", now=later)
    with ledger.session() as session:
        release_lease(session, run_id, "alpha")  # not alpha's any more: no effect
        holder = session.get_one(Run, run_id).owner_token
        assert holder == "beta"
        release_lease(session, run_id, "beta")
    with ledger.session() as session:
        acquire_lease(session, run_id, "gamma", now=later)


def test_a_dead_owner_can_be_taken_over_before_its_lease_expires(ledger: Ledger) -> None:
    with ledger.session() as session:
        run_id = new_task(session).run_id
        acquire_lease(session, run_id, "alpha")
    with ledger.session() as session:
        run = session.get_one(Run, run_id)  # loaded first: the takeover must show in it
        take_over_lease(session, run_id, "beta", previous="alpha")
        holder = run.owner_token
    assert holder == "beta"
    # Only from the owner named: one who took the run meanwhile keeps it.
    with pytest.raises(LeaseError, match="owned by 'beta'"), ledger.session() as session:
        take_over_lease(session, run_id, "gamma", previous="alpha")


def test_only_one_of_many_racing_services_gets_the_lease(ledger: Ledger) -> None:
    with ledger.session() as session:
        run_id = new_task(session).run_id
    winners: list[str] = []
    barrier = threading.Barrier(10)

    def race(owner: str) -> None:
        barrier.wait()
        try:
            with ledger.session() as session:
                acquire_lease(session, run_id, owner)
            winners.append(owner)
        except LeaseError:
            pass

    threads = [threading.Thread(target=race, args=(f"svc{i}",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(winners) == 1


def test_lease_of_a_missing_run(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="not in the ledger"), ledger.session() as session:
        acquire_lease(session, 999, "alpha")


# --- errors never show passwords ----------------------------------------------------------


def test_connection_errors_hide_the_password(ledger_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(ledger_url)
    if url.get_backend_name() == "sqlite":
        bad = "postgresql+psycopg://jobfleet:hunter2-pw@127.0.0.1:1/nowhere"
    else:  # the real server, with a wrong password
        bad = url.set(password="hunter2-pw").render_as_string(hide_password=False)  # noqa: S106
    with pytest.raises(LedgerError) as caught:
        Ledger.open(bad)
    message = str(caught.value)
    assert "hunter2-pw" not in message
    assert "***" in message
    # The driver's exception is not chained as a cause: its repr could carry the URL.
    assert caught.value.__cause__ is None


def test_the_ledger_never_shows_its_password(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        assert ":***@" in ledger.safe_url or ledger.url.password is None
        assert "s3cret" not in ledger.safe_url
        assert "s3cret" not in repr(ledger.url)


def test_unsupported_database_is_named_without_password() -> None:
    with pytest.raises(LedgerError, match=r"'mysql'.*sqlite:///PATH") as caught:
        Ledger.open("mysql://root:hunter2-pw@127.0.0.1/x")
    assert "hunter2-pw" not in str(caught.value)


def test_sqlite_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="names no file"):
        Ledger.open("sqlite://")


def test_rows_updated_behind_the_ledger_are_still_checked(ledger: Ledger) -> None:
    # A bulk UPDATE that skips transition() cannot make the next move legal by accident.
    instance_id = instance_in(ledger, S.RUNNING)
    with ledger.session() as session:
        session.execute(
            update(TaskInstance).where(TaskInstance.id == instance_id).values(state="D")
        )
    with pytest.raises(TransitionError, match="from D to R"), ledger.session() as session:
        transition(session, session.get_one(TaskInstance, instance_id), S.RUNNING)


# --- bulk changes (the service's fast path) -------------------------------------------------


def run_of(ledger: Ledger, instance_id: int) -> int:
    with ledger.read_session() as session:
        return session.get_one(TaskInstance, instance_id).run_id


def test_bulk_changes_set_columns_and_log_events(ledger: Ledger) -> None:
    ids = [instance_in(ledger, S.INSTANTIATED) for _ in range(3)]
    changes = [
        Change(
            i,
            run_of(ledger, i),
            S.INSTANTIATED,
            S.LAUNCHED,
            "submitted",
            values={"distributor_id": f"job-{i}"},
            details={"n": i},
        )
        for i in ids
    ]
    with ledger.session() as session:
        apply_changes(session, changes)
    with ledger.read_session() as session:
        rows = session.scalars(select(TaskInstance).where(TaskInstance.id.in_(ids))).all()
        assert {(r.state, r.distributor_id) for r in rows} == {("O", f"job-{i}") for i in ids}
        assert all(r.submitted_at is not None for r in rows)
        events = session.scalars(
            select(Event).where(Event.task_instance_id.in_(ids), Event.to_state == "O")
        ).all()
        assert sorted(e.details["n"] for e in events) == ids
        assert {e.message for e in events} == {"submitted"}


def test_bulk_changes_refuse_a_forbidden_move_before_writing(ledger: Ledger) -> None:
    ok, done = instance_in(ledger, S.RUNNING), instance_in(ledger, S.DONE)
    changes = [
        Change(ok, run_of(ledger, ok), S.RUNNING, S.DONE),
        Change(done, run_of(ledger, done), S.DONE, S.RUNNING),
    ]
    with pytest.raises(TransitionError, match="DONE ends"), ledger.session() as session:
        apply_changes(session, changes)
    with ledger.read_session() as session:
        assert session.get_one(TaskInstance, ok).state == "R"


def test_bulk_changes_detect_a_stale_state_and_roll_back(ledger: Ledger) -> None:
    fresh, stale = instance_in(ledger, S.RUNNING), instance_in(ledger, S.RUNNING)
    with ledger.session() as session:
        transition(session, session.get_one(TaskInstance, stale), S.DONE)
    changes = [
        Change(fresh, run_of(ledger, fresh), S.RUNNING, S.ERROR_RECOVERABLE),
        Change(stale, run_of(ledger, stale), S.RUNNING, S.ERROR_RECOVERABLE),
    ]
    with pytest.raises(TransitionError, match="changed it"), ledger.session() as session:
        apply_changes(session, changes)
    with ledger.read_session() as session:
        # Nothing of the batch stays: the fresh instance is still running, no E event exists.
        assert session.get_one(TaskInstance, fresh).state == "R"
        assert session.get_one(TaskInstance, stale).state == "D"
        count = select(func.count()).where(Event.to_state == "E")
        assert session.scalar(count) == 0


# --- counts kept by triggers ----------------------------------------------------------------


def counted(session: Session, kind: str) -> dict[tuple[int, str], int]:
    rows = session.execute(
        select(RunCount.run_id, RunCount.state, RunCount.n).where(
            RunCount.kind == kind, RunCount.n != 0
        )
    )
    return {(row.run_id, row.state): row.n for row in rows}


def recount(session: Session, table: type[Task] | type[TaskInstance]) -> dict[tuple[int, str], int]:
    rows = session.execute(
        select(table.run_id, table.state, func.count()).group_by(table.run_id, table.state)
    )
    return {(run_id, state): n for run_id, state, n in rows}


def test_run_counts_follow_every_kind_of_write(ledger: Ledger) -> None:
    ids = [instance_in(ledger, state) for state in (S.QUEUED, S.RUNNING, S.DONE, S.DONE)]
    with ledger.session() as session:
        first = session.get_one(TaskInstance, ids[1])
        apply_changes(session, [Change(first.id, first.run_id, S.RUNNING, S.ERROR_FATAL)])
        task = session.get_one(Task, first.task_id)
        task.state = "failed"
        retry = add_instance(
            session, session.get_one(Task, session.get_one(TaskInstance, ids[0]).task_id)
        )
        session.execute(update(TaskInstance).where(TaskInstance.id == retry.id).values(state="K"))
        # Rows written in bulk and removed count too.
        session.execute(delete(TaskInstance).where(TaskInstance.id == ids[3]))
    with ledger.read_session() as session:
        assert counted(session, "instance") == recount(session, TaskInstance)
        assert counted(session, "task") == recount(session, Task)
    with ledger.session() as session:
        # Deleting a run takes its counts with it.
        run_id = session.get_one(TaskInstance, ids[2]).run_id
        session.execute(delete(Run).where(Run.id == run_id))
    with ledger.read_session() as session:
        assert run_id not in {key[0] for key in counted(session, "instance")}
        assert counted(session, "instance") == recount(session, TaskInstance)


def test_every_name_of_the_package_is_found_when_first_used() -> None:
    # The package loads its names lazily (so that `jobfleet status` need not import
    # SQLAlchemy): each name it exports must come from the module it says.
    import jobfleet.core.host.ledger as package

    assert set(package.__all__) == set(package._MODULE_OF)
    for name in package.__all__:
        module = importlib.import_module(f"{package.__name__}.{package._MODULE_OF[name]}")
        assert getattr(package, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name  # type: ignore[attr-defined]
