"""Name the run's channel address `host_url`, as the distributors, the wrapper and the kit do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # RENAME COLUMN is plain SQL on SQLite (3.25+) and PostgreSQL alike; no table copy needed.
    op.execute("ALTER TABLE runs RENAME COLUMN channel_url TO host_url")


def downgrade() -> None:
    op.execute("ALTER TABLE runs RENAME COLUMN host_url TO channel_url")
