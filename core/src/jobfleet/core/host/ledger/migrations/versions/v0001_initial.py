"""The first ledger schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from jobfleet.core.host.ledger.models import UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Written out rather than imported from the models: a migration must keep describing the schema
# of its own version when the models change later.
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _time(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def _fk(name: str, target: str, *, nullable: bool = False, cascade: bool = True) -> sa.Column[int]:
    ondelete = "CASCADE" if cascade else None
    return sa.Column(
        name, sa.Integer(), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "clusters",
        _id(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("cluster_type", sa.String(100), nullable=False),
    )
    op.create_table(
        "queues",
        _id(),
        _fk("cluster_id", "clusters.id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("parameters", _JSON, nullable=False),
        sa.UniqueConstraint("cluster_id", "name"),
    )
    op.create_table(
        "runs",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        _fk("cluster_id", "clusters.id", cascade=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("created_at", nullable=False),
        _time("finished_at"),
        sa.Column("owner_token", sa.String(100), nullable=True),
        _time("lease_expires_at"),
    )
    op.create_index("ix_runs_cluster_id", "runs", ["cluster_id"])
    op.create_table(
        "tasks",
        _id(),
        _fk("run_id", "runs.id"),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("resources", _JSON, nullable=False),
        sa.Column("env", _JSON, nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tasks_run_id", "tasks", ["run_id"])
    op.create_table(
        "arrays",
        _id(),
        _fk("run_id", "runs.id"),
        _fk("queue_id", "queues.id", nullable=True, cascade=False),
        sa.Column("resources", _JSON, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("distributor_id", sa.String(200), nullable=True),
        sa.Column("distributor_ids", _JSON, nullable=False),
        _time("created_at", nullable=False),
    )
    op.create_index("ix_arrays_run_id", "arrays", ["run_id"])
    _create_task_instances()
    _create_events()


def _create_task_instances() -> None:
    op.create_table(
        "task_instances",
        _id(),
        _fk("task_id", "tasks.id"),
        _fk("run_id", "runs.id"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(1), nullable=False),
        sa.Column("distributor_id", sa.String(200), nullable=True),
        _fk("array_id", "arrays.id", nullable=True, cascade=False),
        sa.Column("array_step", sa.Integer(), nullable=True),
        sa.Column("requested_resources", _JSON, nullable=False),
        sa.Column("exit_record", _JSON, nullable=True),
        sa.Column("maxrss", sa.BigInteger(), nullable=True),
        sa.Column("cpu", sa.Float(), nullable=True),
        sa.Column("wallclock", sa.Float(), nullable=True),
        sa.Column("usage_str", sa.Text(), nullable=True),
        _time("created_at", nullable=False),
        _time("state_at", nullable=False),
        _time("submitted_at"),
        _time("started_at"),
        _time("ended_at"),
        _time("heartbeat_at"),
        sa.UniqueConstraint("task_id", "attempt"),
        sa.UniqueConstraint("array_id", "array_step"),
    )
    op.create_index("ix_task_instances_run_id_state", "task_instances", ["run_id", "state"])
    op.create_index("ix_task_instances_distributor_id", "task_instances", ["distributor_id"])


def _create_events() -> None:
    op.create_table(
        "events",
        _id(),
        _fk("run_id", "runs.id"),
        _fk("task_instance_id", "task_instances.id", nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(1), nullable=True),
        sa.Column("to_state", sa.String(1), nullable=True),
        _time("at", nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
    )
    op.create_index("ix_events_run_id_id", "events", ["run_id", "id"])
    op.create_index("ix_events_task_instance_id", "events", ["task_instance_id"])


def downgrade() -> None:
    for table in ("events", "task_instances", "arrays", "tasks", "runs", "queues", "clusters"):
        op.drop_table(table)
