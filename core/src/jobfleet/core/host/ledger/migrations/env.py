"""Alembic environment of the ledger.

The ledger runs migrations itself (`jobfleet.core.host.ledger.migrate`), on a connection that
already holds its migration lock and transaction; this file only hands that connection over.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from jobfleet.core.host.ledger.models import Base


def run_migrations(connection: Connection) -> None:
    """Upgrade (or downgrade) on the caller's connection, inside the caller's transaction."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: later migrations rewrite tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        # Offline SQL generation and `alembic` without a connection are not supported on purpose:
        # only the ledger's own locking makes concurrent upgrades safe.
        raise RuntimeError("the ledger migrations run only through jobfleet's Ledger.open")
    run_migrations(connection)


_main()
