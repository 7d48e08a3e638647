"""Indexes for `jobfleet ui`: rankings, retries, adjustments and task names of a large run.

The run page shows a run's slowest and hungriest attempts, its newest retries and its resource
adjustments; the tasks page sorts by name, wall-clock time or peak memory. Without these, each
read every instance (or event, or task) of the run: seconds for a run of a million instances
(bench/ui.py). The rankings use indexes of (run_id, wallclock) and (run_id, maxrss), the names
one of (run_id, name); retries and non-transition events are few, so their indexes are partial
(only those rows) and cost the service's writes next to nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_RETRIES = sa.text("attempt > 1")
_NOTES = sa.text("kind != 'transition'")


def upgrade() -> None:
    op.create_index("ix_tasks_run_id_name", "tasks", ["run_id", "name"])
    op.create_index("ix_task_instances_run_id_wallclock", "task_instances", ["run_id", "wallclock"])
    op.create_index("ix_task_instances_run_id_maxrss", "task_instances", ["run_id", "maxrss"])
    op.create_index(
        "ix_task_instances_retries", "task_instances", ["run_id", "id"],
        sqlite_where=_RETRIES, postgresql_where=_RETRIES,
    )  # fmt: skip
    op.create_index(
        "ix_events_notes", "events", ["run_id", "id"],
        sqlite_where=_NOTES, postgresql_where=_NOTES,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_events_notes", "events")
    op.drop_index("ix_task_instances_retries", "task_instances")
    op.drop_index("ix_task_instances_run_id_maxrss", "task_instances")
    op.drop_index("ix_task_instances_run_id_wallclock", "task_instances")
    op.drop_index("ix_tasks_run_id_name", "tasks")
