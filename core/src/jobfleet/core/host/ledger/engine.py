"""Where the ledger lives (URL resolution) and how its engine talks to the database."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from jobfleet.core.host.defaults import DEFAULT_BUSY_TIMEOUT, DEFAULT_PATH, ENV_VAR
from jobfleet.core.host.ledger.errors import LedgerError
from jobfleet.core.host.ledger.read_only import connect_read_only
from jobfleet.core.private import create_private_file, make_private_dirs

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_PATH",
    "ENV_VAR",
    "READ_ONLY_OPTION",
    "create_ledger_engine",
    "resolve_url",
    "safe_url",
]

STDIN_URL: Final = "-"
"""Given as the URL: read the URL from the first line of standard input. How a detached run
hands its ledger URL (and password) to its service, where no other process can see it."""
# Set on a connection (execution option) to open a deferred transaction instead of IMMEDIATE.
READ_ONLY_OPTION: Final = "jobfleet_read_only"
# Values per `IN (…)` list: every list of ids the host sends is cut into batches of this many,
# far below each database's limit on bound parameters (SQLite: 999 before 3.32, 32766 since,
# 250000 in some distributions' builds; PostgreSQL: 65535), whatever the size of the run.
IN_BATCH: Final = 500

_T = TypeVar("_T")


def in_batches(values: Iterable[_T], size: int = IN_BATCH) -> Iterator[list[_T]]:
    """`values` in lists of at most `size`, one per statement with an `IN (…)` of them."""
    batch: list[_T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def safe_url(url: str | URL) -> str:
    """The URL as it may appear in a message or a log: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Not a URL at all: show nothing of it, as it might still hold a secret.
        return "<unreadable ledger URL>"


def resolve_url(url: str | os.PathLike[str] | URL | None = None, *, cwd: Path | None = None) -> URL:
    """The ledger URL: the one given, else $JOBFLEET_LEDGER, else ./.jobfleet/ledger.db.

    A value without `://` is a path to a SQLite file, so that `--ledger runs.db` works; `-`
    (`STDIN_URL`) reads the URL from the first line of standard input.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if url == STDIN_URL:
        url = sys.stdin.readline().strip()
        if not url:
            raise LedgerError("The ledger URL was to come on standard input, which gave none.")
    raw: str | URL = url if url is not None else os.environ.get(ENV_VAR) or ""
    if isinstance(raw, str) and "://" not in raw:
        path = Path(raw) if raw else DEFAULT_PATH
        path = path if path.is_absolute() else (cwd or Path.cwd()) / path
        return URL.create("sqlite", database=str(path))
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise LedgerError(f"The ledger URL {safe_url(raw)} cannot be read: {exc}") from None
    # psycopg 3 is the driver jobfleet ships with; a bare postgresql:// would ask for psycopg2.
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_ledger_engine(
    url: URL, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, read_only: bool = False
) -> Engine:
    """An engine for the ledger, set up for its backend.

    `read_only` opens a SQLite file so that nothing can be written (and nothing needs write
    access: a ledger file or directory the user may only read can still be looked into).
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, busy_timeout, read_only=read_only)
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise LedgerError(
        f"The ledger URL {safe_url(url)} names the database {backend!r}; "
        "jobfleet supports sqlite:///PATH and postgresql+psycopg://USER:PASSWORD@HOST/DB."
    )


def _sqlite_engine(url: URL, busy_timeout: float, *, read_only: bool = False) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise LedgerError(
            f"The ledger URL {safe_url(url)} names no file: the ledger needs a SQLite file "
            "(WAL mode and several processes sharing it), such as sqlite:///.jobfleet/ledger.db."
        )
    if read_only:
        engine = create_engine(
            url, creator=_read_only_connector(database, busy_timeout), pool_size=2, max_overflow=8
        )
        event.listen(engine, "connect", _sqlite_on_connect(busy_timeout, read_only=True))
        event.listen(engine, "begin", _sqlite_begin_deferred)
        return engine
    _create_private_database(Path(database))
    engine = create_engine(
        url,
        # Pooled connections move between threads; each is used by one thread at a time.
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        pool_size=10,
        max_overflow=20,
    )
    event.listen(engine, "connect", _sqlite_on_connect(busy_timeout))
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_private_database(path: Path) -> None:
    """Create a new ledger file (and its missing directories) readable by its owner only.

    The ledger holds every task's command and `env`. SQLite would create the file with the
    umask's mode (0644 under the usual 022); made first as an empty 0600 file (which SQLite
    takes for an empty database), it keeps 0600, and SQLite gives its -wal and -shm files the
    database's mode. An existing file is left as it is, and so is a file that cannot be
    made here: SQLite then says why it cannot open it.
    """
    try:
        make_private_dirs(path.parent)
        create_private_file(path)
    except OSError:
        pass


def _read_only_connector(database: str, busy_timeout: float) -> Any:
    """Connections that open the file read-only (see `read_only.connect_read_only`)."""

    def connect() -> Any:
        return connect_read_only(database, busy_timeout)

    return connect


def _sqlite_on_connect(busy_timeout: float, *, read_only: bool = False) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not read_only:  # the journal mode is written in the file
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # With WAL, NORMAL survives a killed process; only a power cut can lose the last
            # commits. It saves an fsync per transaction.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def _sqlite_on_begin(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is
    # locked" when another writer got in between, whatever the busy timeout. Taking the write
    # lock up front makes writers queue on the busy timeout instead. Readers ask for a plain
    # BEGIN, which never blocks in WAL mode.
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_begin_deferred(connection: Any) -> None:
    # A read-only connection never writes: every transaction is a reader's.
    connection.exec_driver_sql("BEGIN")
