"""`jobfleet status` of a SQLite ledger, read with the stdlib's `sqlite3` instead of SQLAlchemy.

Why this exists: start-up time. Importing SQLAlchemy's ORM alone takes ≈ 0.5 s on the
reference machine, most of what `jobfleet status` took (target ≤ 0.6 s, issue 11 item 8;
docs/performance.md, "Command-line start-up"). The questions are few and fixed, so they are
asked here a second time, in the SQL that `host/queries.py` makes SQLAlchemy send, and answered
with the same rows (host/rows.py) that the command line renders whichever reader built them.
`tests/test_cli_inspect.py` holds the two readers to the same output.

It answers only for a SQLite file (a path, or a plain `sqlite:///PATH` URL) whose schema is at
this jobfleet's newest revision, opened read-only (`mode=ro`): nothing is created, migrated or
written. For anything else — PostgreSQL, `-`, an older or newer schema, a database that is
not a ledger, a file that cannot be read — `open_reader` (or any question) raises
`Unavailable`, and the caller asks through SQLAlchemy, which migrates, refuses or explains as
it always has.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import quote, unquote

from jobfleet.core.host.defaults import DEFAULT_BUSY_TIMEOUT, DEFAULT_PATH, ENV_VAR
from jobfleet.core.host.ledger.read_only import connect_read_only
from jobfleet.core.host.ledger.revisions import quick_head
from jobfleet.core.host.ledger.states import InstanceState
from jobfleet.core.host.rows import (
    NotFoundError,
    RunSummary,
    TaskRow,
    ordered,
    run_summary_of,
    task_row,
)

__all__ = ["QuickReader", "Unavailable", "open_reader", "sqlite_file"]

_SQLITE_PREFIX: Final = "sqlite:///"
# The statements, as `host/queries.py` has SQLAlchemy write them for SQLite.
_RUN = (
    "SELECT runs.id, runs.name, runs.cluster_id, runs.status, runs.created_at, "
    "runs.finished_at, runs.owner_token, runs.lease_expires_at"
)
_RUN_BY_ID: Final = f"{_RUN} FROM runs WHERE runs.id = ?"
_RUNS_BY_NAME: Final = f"{_RUN} FROM runs WHERE runs.name = ? ORDER BY runs.id"
_NEWEST_RUNS: Final = (
    f"{_RUN}, clusters.name FROM runs JOIN clusters ON clusters.id = runs.cluster_id "
    "ORDER BY runs.created_at DESC, runs.id DESC LIMIT ?"
)
# The ids as one JSON array: no limit on how many, unlike bound parameters.
_TASK_COUNTS: Final = (
    "SELECT run_id, state, n FROM run_counts "
    "WHERE run_id IN (SELECT value FROM json_each(?)) AND kind = 'task'"
)
# `queries.task_rows_statement`: the page of tasks first (LIMIT -1: all), then only their
# latest attempts, through the unique (task_id, attempt) index.
_TASK_ROWS: Final = (
    "WITH page AS (SELECT tasks.id AS id, tasks.name AS name, tasks.state AS state "
    "FROM tasks WHERE tasks.run_id = ? ORDER BY tasks.id LIMIT ?) "
    "SELECT page.id, page.name, page.state, task_instances.id, task_instances.state, "
    "task_instances.attempt, "
    "CAST(JSON_EXTRACT(task_instances.exit_record, '$.\"reason\"') AS VARCHAR), "
    "task_instances.wallclock, task_instances.maxrss, task_instances.cpu, "
    "CAST(JSON_EXTRACT(task_instances.requested_resources, '$.\"memory\"') AS VARCHAR), "
    "task_instances.hostname "
    "FROM page LEFT OUTER JOIN ("
    "SELECT task_instances.task_id AS task_id, max(task_instances.attempt) AS attempt "
    "FROM task_instances WHERE task_instances.task_id IN (SELECT page.id FROM page) "
    "GROUP BY task_instances.task_id) AS latest ON latest.task_id = page.id "
    "LEFT OUTER JOIN task_instances ON task_instances.task_id = latest.task_id "
    "AND task_instances.attempt = latest.attempt ORDER BY page.id"
)


class Unavailable(Exception):
    """This reader cannot answer for the ledger: ask through SQLAlchemy instead."""


def sqlite_file(url: str | None) -> str | None:
    """The SQLite file that `--ledger` (or $JOBFLEET_LEDGER, or the default) names, as
    `engine.resolve_url` reads it; None for any other URL, and for `-` (standard input can
    be read only once: the SQLAlchemy path reads it)."""
    raw = url if url is not None else os.environ.get(ENV_VAR) or ""
    if raw == "-":
        return None
    if "://" not in raw:
        path = Path(raw) if raw else DEFAULT_PATH
        return str(path if path.is_absolute() else Path.cwd() / path)
    # `sqlite:///rel.db` and `sqlite:////abs.db`, as SQLAlchemy's URL parser reads them; a
    # query string, an in-memory database or a `file:` URI are left to SQLAlchemy.
    if not raw.startswith(_SQLITE_PREFIX) or "?" in raw:
        return None
    database = unquote(raw.removeprefix(_SQLITE_PREFIX))
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


@contextmanager
def open_reader(database: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Iterator[QuickReader]:
    """A reader of the SQLite ledger `database` (an existing file), in one read transaction.

    Raises `Unavailable` when the file cannot be opened as a database or its schema is not at
    this jobfleet's newest revision (`revisions.quick_head`).
    """
    try:
        connection = connect_read_only(database, busy_timeout)
    except sqlite3.Error as exc:
        raise Unavailable(str(exc)) from exc
    try:
        connection.isolation_level = None  # transactions begin where this module says
        reader = QuickReader(connection, database)
        reader.begin()
        yield reader
    finally:
        connection.close()  # rolls the read transaction back


class _Run(NamedTuple):
    id: int
    name: str
    cluster_id: int
    status: str
    created_at: datetime
    finished_at: datetime | None
    owner_token: str | None
    lease_expires_at: datetime | None


class QuickReader:
    """The questions of `jobfleet status` (`rows.StatusSource`) asked of a SQLite ledger.

    Each mirrors the function of `host/queries.py` with the same name (`find_run_summary` is
    `find_run` then `run_summary`): the same statements, the same rows, the same errors.
    """

    def __init__(self, connection: sqlite3.Connection, database: str) -> None:
        self._connection = connection
        # How SQLAlchemy shows the URL (`URL.render_as_string`); a file URL has no password.
        self.where = _SQLITE_PREFIX + quote(database, safe=" +/")

    def begin(self) -> None:
        """Start the read transaction; refuse a ledger not at this jobfleet's schema."""
        self._rows("BEGIN")
        head = quick_head()
        # `migrate.current_revision`: several rows would be branches, shown joined.
        found = sorted(row[0] for row in self._rows("SELECT version_num FROM alembic_version"))
        if head is None or " ".join(found) != head:
            raise Unavailable(f"schema revision {' '.join(found) or None}, not {head}")

    def run_count(self) -> int:
        return int(self._rows("SELECT count(*) FROM runs")[0][0] or 0)

    def run_summaries(self, limit: int) -> list[RunSummary]:
        rows = self._rows(_NEWEST_RUNS, (limit,))
        return self._summaries([(_run(row[:-1]), row[-1]) for row in rows])

    def find_run_summary(self, ref: str) -> RunSummary:
        run = self._find_run(ref)
        found = self._rows("SELECT name FROM clusters WHERE id = ?", (run.cluster_id,))
        cluster = (found[0][0] if found else None) or "?"
        return self._summaries([(run, cluster)])[0]

    def state_counts(self, run_id: int) -> dict[str, int]:
        counts = self._counts(run_id, "instance")
        return ordered(counts, [state.value for state in InstanceState])

    def task_rows(self, run_id: int, limit: int | None) -> list[TaskRow]:
        rows = self._rows(_TASK_ROWS, (run_id, -1 if limit is None else limit))
        return [task_row(columns) for columns in rows]

    def scaler_view(self, run_id: int) -> dict[str, Any] | None:
        found = self._rows("SELECT options FROM runs WHERE id = ?", (run_id,))
        if not found or not found[0][0]:
            return None
        view = json.loads(found[0][0]).get("scaler_view")
        return dict(view) if isinstance(view, dict) else None

    # --- the pieces ---

    def _find_run(self, ref: str) -> _Run:
        # `queries.find_run`: digits are tried as an id first, then as a name.
        text = ref.strip()
        run_id = int(ref) if text.isascii() and text.isdigit() else None
        if run_id is not None:
            found = self._rows(_RUN_BY_ID, (run_id,))
            if found:
                return _run(found[0])
        matches = self._rows(_RUNS_BY_NAME, (ref,))
        if len(matches) == 1:
            return _run(matches[0])
        if not matches:
            what = f"run {ref}" if run_id is not None else f"run named {ref!r}"
            raise NotFoundError(f"There is no {what} in the ledger at {self.where}.")
        ids = ", ".join(str(row[0]) for row in matches)
        raise NotFoundError(f"{len(matches)} runs are named {ref!r}: use an id: {ids}.")

    def _summaries(self, runs: Sequence[tuple[_Run, str]]) -> list[RunSummary]:
        counts: dict[int, dict[str, int]] = {}
        ids = json.dumps([run.id for run, _ in runs])
        for run_id, state, count in self._rows(_TASK_COUNTS, (ids,)):
            counts.setdefault(run_id, {})[state] = count
        now = datetime.now(UTC)
        return [run_summary_of(run, cluster, counts.get(run.id, {}), now) for run, cluster in runs]

    def _counts(self, run_id: int, kind: str) -> dict[str, int]:
        rows = self._rows(
            "SELECT state, n FROM run_counts WHERE run_id = ? AND kind = ?", (run_id, kind)
        )
        return {state: int(n) for state, n in rows}

    def _rows(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection.execute(statement, parameters).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc


def _run(row: Sequence[Any]) -> _Run:
    run_id, name, cluster_id, status, created, finished, owner, expires = row
    return _Run(run_id, name, cluster_id, status, _utc(created), _maybe_utc(finished), owner,
                _maybe_utc(expires))  # fmt: skip


def _utc(value: str) -> datetime:
    # How `models.UTCDateTime` reads SQLAlchemy's SQLite text: naive UTC, made aware.
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _maybe_utc(value: str | None) -> datetime | None:
    return None if value is None else _utc(value)
