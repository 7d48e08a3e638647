"""Bring a ledger's schema to the newest version, safely when several processes open it at once."""

from __future__ import annotations

from importlib import resources
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from jobfleet.core.host.ledger.engine import READ_ONLY_OPTION

# Any constant shared by every jobfleet process: the PostgreSQL advisory lock held while
# migrating ("jobfleet" in ASCII, fits a bigint).
_PG_LOCK_KEY: Final = 0x6A6F62666C656574


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in this package."""
    config = Config()
    location = resources.files("jobfleet.core.host.ledger") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


def head_revision() -> str | None:
    """The newest migration this version of jobfleet knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The migration a database is at (None for a new one)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Apply every missing migration, in one transaction that holds the migration lock.

    On SQLite the transaction starts with BEGIN IMMEDIATE (see engine.py), which is the lock: a
    second process waits on the busy timeout, then finds the schema at head and does nothing.
    On PostgreSQL a transaction-scoped advisory lock does the same.
    """
    head = head_revision()
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY_OPTION: True})
        if current_revision(connection) == head:
            return  # the common case: no lock, no write transaction
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
