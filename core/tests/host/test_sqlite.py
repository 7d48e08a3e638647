"""What only SQLite needs: its default location, WAL, busy timeout, and many writers at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from jobfleet.core.host.ledger import (
    ENV_VAR,
    Cluster,
    InstanceState,
    Ledger,
    LedgerError,
    Run,
    Task,
    TaskInstance,
    add_instance,
    resolve_url,
    transition,
    utcnow,
)

S = InstanceState


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with Ledger.open() as ledger:
        assert ledger.url.database == str(tmp_path / ".jobfleet" / "ledger.db")
    assert (tmp_path / ".jobfleet" / "ledger.db").is_file()


def test_environment_variable_and_plain_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env.db"))
    assert resolve_url().database == str(tmp_path / "from-env.db")
    assert resolve_url("runs.db", cwd=tmp_path).database == str(tmp_path / "runs.db")
    explicit = resolve_url("postgresql://u:p@127.0.0.1/db")
    assert explicit.drivername == "postgresql+psycopg"  # psycopg 3, not psycopg2


def test_pragmas_on_every_connection(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db", busy_timeout=12.5) as ledger:
        for _ in range(3):
            with ledger.engine.connect() as connection:
                values = [
                    connection.execute(text(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "busy_timeout", "foreign_keys")
                ]
                assert values == ["wal", 12500, 1]
            ledger.engine.dispose()  # the next round gets a brand-new connection


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    ledger = Ledger.open(str(tmp_path / "l.db"))
    with pytest.raises(IntegrityError), ledger.session() as session:
        session.add(Run(name="orphan", cluster_id=42))
    ledger.close()


def test_a_reader_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    with Ledger.open(str(tmp_path / "l.db"), busy_timeout=5) as ledger:
        with ledger.session() as session:
            session.add(Cluster(name="c", cluster_type="dummy"))
        with ledger.session() as writer:
            writer.add(Cluster(name="d", cluster_type="dummy"))
            writer.flush()  # holds the write lock until the block ends
            started = time.monotonic()
            with ledger.read_session() as reader:
                assert reader.scalars(select(Cluster.name)).all() == ["c"]
            assert time.monotonic() - started < 1


def test_twenty_writers_at_once_never_see_database_locked(tmp_path: Path) -> None:
    url = str(tmp_path / "busy.db")
    with Ledger.open(url) as ledger, ledger.session() as session:
        cluster = Cluster(name="c", cluster_type="dummy")
        session.add(cluster)
        session.flush()
        run = Run(name="r", cluster_id=cluster.id)
        session.add(run)
        session.flush()
        tasks = [Task(run_id=run.id, name=f"t{i}", command="true") for i in range(20)]
        session.add_all(tasks)
        session.flush()
        ids = [add_instance(session, task).id for task in tasks]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(ids))

    def work(instance_id: int) -> None:
        # Each thread is its own service (own engine and connections), as separate processes
        # would be, and updates its own instance in many small transactions.
        try:
            with Ledger.open(url) as own:
                barrier.wait()
                for letter in "IOR":
                    with own.session() as session:
                        transition(session, session.get_one(TaskInstance, instance_id), letter)
                for _ in range(20):
                    with own.session() as session:
                        session.get_one(TaskInstance, instance_id).heartbeat_at = utcnow()
                with own.session() as session:
                    instance = session.get_one(TaskInstance, instance_id)
                    instance.maxrss, instance.cpu, instance.wallclock = 1024, 0.5, 1.0
                    transition(session, instance, S.DONE)
        except BaseException as exc:  # reported below with every other thread's
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Ledger.open(url) as ledger, ledger.read_session() as session:
        states = session.scalars(select(TaskInstance.state)).all()
    assert states == ["D"] * 20


def test_a_read_only_ledger_reads_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path) as ledger, ledger.session() as session:
        session.add(Cluster(name="c", cluster_type="dummy"))
    before = path.read_bytes()
    with Ledger.open(path, read_only=True) as reader:
        with reader.read_session() as session:
            assert session.scalars(select(Cluster.name)).all() == ["c"]
        with pytest.raises(LedgerError, match="opened read-only"), reader.session():
            pass
        # Even past the ledger's own guard, the connection cannot write.
        with reader.engine.connect() as connection, pytest.raises(OperationalError):
            connection.execute(text("DELETE FROM clusters"))
    assert path.read_bytes() == before
