"""The ledger's tables, as a SQLAlchemy 2 typed ORM.

The Alembic migrations in `migrations/versions` create exactly this schema (a test compares
them); a change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_EMPTY_OBJECT = text("'{}'")


class _Json(TypeDecorator[Any]):
    """JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.

    What `JSON().with_variant(JSONB(), "postgresql")` says, without importing the PostgreSQL
    dialect (tens of milliseconds) into every command that reads a SQLite ledger.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


JsonType = _Json()


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always read back as an aware UTC datetime.

    SQLite has no time zones and PostgreSQL's `timestamptz` returns aware values: storing naive
    UTC everywhere gives both backends the same values and comparisons.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"the ledger stores aware datetimes only, got {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC (what every ledger timestamp holds)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JsonType,
    }


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    cluster_type: Mapped[str] = mapped_column(String(100))


class Queue(Base):
    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # The queue's limits and defaults, as `QueueLimits` reads them from queue parameters.
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="created")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # The service that owns the run, and until when: a crashed owner stops renewing and loses it.
    owner_token: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    # A random token of this run alone (None for runs older than migration 0005): in its work
    # directory's name and in every spec and report, so that runs of two ledgers never mix.
    token: Mapped[str | None] = mapped_column(String(64))
    # Where the run's channel and logs live, and the options a resumed service must reuse.
    work_dir: Mapped[str | None] = mapped_column(Text)
    host_url: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=_EMPTY_OBJECT)
    # How far the service has read the channel (an `EventCursor` as a dict).
    event_cursor: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    kill_requested_at: Mapped[datetime | None]


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_run_id_state", "run_id", "state"),
        # `jobfleet ui`'s tasks sorted by name (migration 0006).
        Index("ix_tasks_run_id_name", "run_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    command: Mapped[str] = mapped_column(Text)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # Retry options: resource_scale, fallback_queues.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=_EMPTY_OBJECT)
    # TaskState: pending until the service decides the task is over.
    state: Mapped[str] = mapped_column(
        String(16), default="pending", server_default=text("'pending'")
    )


class Array(Base):
    """One submission to a backend: an array of steps 0..size-1 (or a single instance)."""

    __tablename__ = "arrays"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    size: Mapped[int]
    # The backend's id of the whole array, and of each step ({"0": "123_0", ...}).
    distributor_id: Mapped[str | None] = mapped_column(String(200))
    distributor_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskInstance(Base):
    """One attempt of a task."""

    __tablename__ = "task_instances"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt"),
        UniqueConstraint("array_id", "array_step"),
        # The service's main query: the instances of a run in a given state.
        Index("ix_task_instances_run_id_state", "run_id", "state"),
        Index("ix_task_instances_run_id_task_id", "run_id", "task_id"),
        # `jobfleet ui`'s rankings and retries of a run (migration 0006).
        Index("ix_task_instances_run_id_wallclock", "run_id", "wallclock"),
        Index("ix_task_instances_run_id_maxrss", "run_id", "maxrss"),
        # Partial: `WHERE attempt > 1` (migration 0006). The condition is left out here: a
        # `postgresql_where` would import SQLAlchemy's PostgreSQL dialect for every ledger.
        Index("ix_task_instances_retries", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    # Copied from the task so that (run, state) needs no join.
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    state: Mapped[str] = mapped_column(String(1), default="Q")
    distributor_id: Mapped[str | None] = mapped_column(String(200), index=True)
    array_id: Mapped[int | None] = mapped_column(ForeignKey("arrays.id"))
    array_step: Mapped[int | None]
    requested_resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    exit_record: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    maxrss: Mapped[int | None] = mapped_column(BigInteger)
    cpu: Mapped[float | None] = mapped_column(Float)
    wallclock: Mapped[float | None] = mapped_column(Float)
    usage_str: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    kill_requested_at: Mapped[datetime | None]
    # How many times triage asked the backend without getting a final answer.
    triage_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    hostname: Mapped[str | None] = mapped_column(String(255))
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """An append-only log: every state transition and every adjustment, in order."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_run_id_id", "run_id", "id"),
        # Events other than transitions (adjustments, kills, notes), for `jobfleet ui`:
        # partial, `WHERE kind != 'transition'` (migration 0006; condition left out as above).
        Index("ix_events_notes", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("task_instances.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(1))
    to_state: Mapped[str | None] = mapped_column(String(1))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RunCount(Base):
    """How many tasks or task instances of a run are in a state.

    Kept by database triggers (migration 0003) in the same transaction as every change of the
    counted rows, so reading a run's counts costs one small index range, whatever its size.
    Counts that fell to zero stay as rows with n = 0.
    """

    __tablename__ = "run_counts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    """"task" (states of TaskState) or "instance" (the letters of InstanceState)."""
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
