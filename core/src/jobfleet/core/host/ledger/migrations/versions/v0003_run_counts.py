"""Counts of tasks and task instances per run and state, kept by triggers.

`jobfleet status` of a run with a million instances must not count a million rows: the
database keeps the counts itself, in the same transaction as every insert, state change and
delete of a task or task instance, whoever writes them (the service, the ledger API, SQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# (table, kind of count)
_COUNTED = (("tasks", "task"), ("task_instances", "instance"))

_SQLITE_INCREMENT = (
    "INSERT INTO run_counts (run_id, kind, state, n) VALUES (NEW.run_id, '{kind}', NEW.state, 1) "
    "ON CONFLICT (run_id, kind, state) DO UPDATE SET n = n + 1;"
)
_SQLITE_DECREMENT = (
    "UPDATE run_counts SET n = n - 1 "
    "WHERE run_id = OLD.run_id AND kind = '{kind}' AND state = OLD.state;"
)

_POSTGRES_FUNCTION = """
CREATE FUNCTION jobfleet_count_states() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    count_kind text := TG_ARGV[0];
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE run_counts SET n = n - 1
        WHERE run_id = OLD.run_id AND kind = count_kind AND state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO run_counts (run_id, kind, state, n)
        VALUES (NEW.run_id, count_kind, NEW.state, 1)
        ON CONFLICT (run_id, kind, state) DO UPDATE SET n = run_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "run_counts",
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    for table, kind in _COUNTED:
        op.execute(
            f"INSERT INTO run_counts (run_id, kind, state, n) "  # noqa: S608 - constants only
            f"SELECT run_id, '{kind}', state, count(*) FROM {table} GROUP BY run_id, state"
        )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table, kind in _COUNTED:
        increment = _SQLITE_INCREMENT.format(kind=kind)
        decrement = _SQLITE_DECREMENT.format(kind=kind)
        op.execute(
            f"CREATE TRIGGER {table}_count_insert AFTER INSERT ON {table} BEGIN {increment} END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_count_update AFTER UPDATE OF state ON {table} "
            f"WHEN OLD.state IS NOT NEW.state BEGIN {decrement} {increment} END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_count_delete AFTER DELETE ON {table} BEGIN {decrement} END"
        )


def _postgres_triggers() -> None:
    op.execute(_POSTGRES_FUNCTION)
    for table, kind in _COUNTED:
        op.execute(
            f"CREATE TRIGGER {table}_count_insert_delete AFTER INSERT OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION jobfleet_count_states('{kind}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_count_update AFTER UPDATE OF state ON {table} "
            "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) "
            f"EXECUTE FUNCTION jobfleet_count_states('{kind}')"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, _kind in _COUNTED:
        if postgres:
            op.execute(f"DROP TRIGGER {table}_count_insert_delete ON {table}")
            op.execute(f"DROP TRIGGER {table}_count_update ON {table}")
        else:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_count_{event}")
    if postgres:
        op.execute("DROP FUNCTION jobfleet_count_states()")
    op.drop_table("run_counts")
