"""A random token per run, in its work directory's name and in every spec and report.

Two ledgers side by side (two SQLite files in one directory, or SQLite and PostgreSQL run
from one directory) number their runs and instances alike, so "run 1, instance 1" named two
things at once: both used `runs/run-1/` and read each other's reports. The token makes the
work directory `runs/run-N-TOKEN/` and lets the host refuse a report that is not its run's.
Runs made before it have none and keep their directory.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("token", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "token")
