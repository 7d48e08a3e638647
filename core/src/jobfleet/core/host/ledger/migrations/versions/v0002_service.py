"""What the distributor service and the CLI keep besides the first schema.

Runs: where their channel and logs live, the options a resumed service must reuse, the channel
cursor read so far, and a kill request. Tasks: their retry options and whether they are over.
Task instances: a kill request, how often triage asked the backend, where the task ran and
logged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from jobfleet.core.host.ledger.models import UTCDateTime

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_EMPTY_OBJECT = sa.text("'{}'")


def upgrade() -> None:
    op.add_column("runs", sa.Column("work_dir", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("channel_url", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("options", _JSON, nullable=False, server_default=_EMPTY_OBJECT))
    op.add_column("runs", sa.Column("event_cursor", _JSON, nullable=True))
    op.add_column("runs", sa.Column("kill_requested_at", UTCDateTime(), nullable=True))
    op.add_column(
        "tasks", sa.Column("options", _JSON, nullable=False, server_default=_EMPTY_OBJECT)
    )
    # pending until the service decides the task is over: done, failed or killed.
    op.add_column(
        "tasks",
        sa.Column("state", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
    )
    op.create_index("ix_tasks_run_id_state", "tasks", ["run_id", "state"])
    op.add_column("task_instances", sa.Column("kill_requested_at", UTCDateTime(), nullable=True))
    op.add_column(
        "task_instances",
        sa.Column("triage_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("task_instances", sa.Column("hostname", sa.String(255), nullable=True))
    op.add_column("task_instances", sa.Column("stdout_path", sa.Text(), nullable=True))
    op.add_column("task_instances", sa.Column("stderr_path", sa.Text(), nullable=True))
    # `jobfleet status` lists a run's tasks with their latest attempt.
    op.create_index("ix_task_instances_run_id_task_id", "task_instances", ["run_id", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_instances_run_id_task_id", "task_instances")
    for column in ("stderr_path", "stdout_path", "hostname", "triage_count", "kill_requested_at"):
        op.drop_column("task_instances", column)
    op.drop_index("ix_tasks_run_id_state", "tasks")
    op.drop_column("tasks", "state")
    op.drop_column("tasks", "options")
    for column in ("kill_requested_at", "event_cursor", "options", "channel_url", "work_dir"):
        op.drop_column("runs", column)
