"""Bring a ledger's schema to the newest version, safely when several processes open it at once.

Opening a ledger whose schema is current (the common case) costs one query and no import of
Alembic: the stored revision is read with plain SQL and compared with the newest revision,
which is read from the migration files' text (`revisions`). Alembic is imported only to
migrate.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, Engine, inspect, text

from jobfleet.core.host.ledger.engine import READ_ONLY_OPTION, safe_url
from jobfleet.core.host.ledger.errors import LedgerError
from jobfleet.core.host.ledger.revisions import known_revisions, quick_head

if TYPE_CHECKING:
    from alembic.config import Config

# Any constant shared by every jobfleet process: the PostgreSQL advisory lock held while
# migrating ("jobfleet" in ASCII, fits a bigint).
_PG_LOCK_KEY: Final = 0x6A6F62666C656574
VERSION_TABLE: Final = "alembic_version"


class ForeignDatabaseError(LedgerError):
    """The database holds tables, but not a jobfleet ledger: it belongs to something else."""


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in this package."""
    from alembic.config import Config

    config = Config()
    location = resources.files("jobfleet.core.host.ledger") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


def head_revision() -> str | None:
    """The newest migration this version of jobfleet knows, as Alembic finds it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The migration a database is at (None for a database without jobfleet's version table)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    found = sorted(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    # Several rows are branches jobfleet never makes: shown as they are, they are refused as
    # unknown by `check_is_a_ledger`.
    return " ".join(found) or None


def check_is_a_ledger(connection: Connection, current: str | None) -> None:
    """Refuse a database that belongs to another application, before anything is written.

    A database without jobfleet's version table must be empty: jobfleet's tables are never
    added to another application's database. A version jobfleet does not know was written by
    a newer jobfleet, or by another application that uses Alembic.
    """
    where = _where(connection)
    if current is None:
        names = set(inspect(connection).get_table_names())
        if VERSION_TABLE in names:
            # Another jobfleet created the schema between the two reads (on PostgreSQL each
            # statement sees what was committed when it began): judge what is there now.
            current = current_revision(connection)
    if current is None:
        tables = sorted(names - {VERSION_TABLE})
        if tables:
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if tables[5:] else "")
            raise ForeignDatabaseError(
                f"{where} is not a jobfleet ledger: it has tables ({shown}) but no jobfleet "
                "schema. Name another ledger with --ledger (a new file is created), or "
                "$JOBFLEET_LEDGER."
            )
        return
    if current not in known_revisions():
        raise ForeignDatabaseError(
            f"{where} is at schema revision {current!r}, which this jobfleet does not know "
            f"(its newest is {quick_head() or head_revision()!r}): it was written by a newer "
            "jobfleet, or it is another application's database."
        )


def _where(connection: Connection) -> str:
    url = connection.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return f"The database file {url.database}"
    return f"The database {safe_url(url)}"


def needs_upgrade(engine: Engine) -> bool:
    """Whether the ledger's schema is behind this jobfleet's (reads only; refuses a database
    that is not a jobfleet ledger)."""
    head = quick_head() or head_revision()
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY_OPTION: True})
        current = current_revision(connection)
        if current is not None and current == head:
            return False  # the common case: one query, no lock, no write, no Alembic
        check_is_a_ledger(connection, current)
    return True


def upgrade(engine: Engine) -> None:
    """Apply every missing migration, in one transaction that holds the migration lock.

    On SQLite the transaction starts with BEGIN IMMEDIATE (see engine.py), which is the lock: a
    second process waits on the busy timeout, then finds the schema at head and does nothing.
    On PostgreSQL a transaction-scoped advisory lock does the same.
    """
    if not needs_upgrade(engine):
        return
    from alembic import command
    from alembic.util.exc import CommandError

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Again under the lock: another process may have changed the database meanwhile.
        check_is_a_ledger(connection, current_revision(connection))
        config = alembic_config()
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise LedgerError(f"its schema could not be migrated: {exc}") from exc
