"""The run's lease: one service drives a run at a time.

The lease is taken at start (at once from an owner on this machine whose process is gone;
from any other owner only once its lease expired), renewed every third of its length, and
given up at a clean stop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from jobfleet.core.channel import EventCursor
from jobfleet.core.host.ledger import (
    FINAL_RUN_STATUSES,
    Cluster,
    LeaseError,
    Ledger,
    Queue,
    Run,
    RunStatus,
    acquire_lease,
    lease_is_live,
    owner_is_gone,
    release_lease,
    renew_lease,
    take_over_lease,
)
from jobfleet.core.host.queues import queue_rows
from jobfleet.core.host.service.context import RunContext, ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredRun:
    """How the run is to be driven, as the ledger holds it: read when the lease is taken."""

    cluster_name: str
    cluster_type: str
    options: dict[str, Any]
    host_url: str | None
    queue_rows: dict[str, Queue]


def claim_run(context: RunContext) -> StoredRun:
    """Take the run's lease and mark it running; where it stands goes into `context`."""
    with context.ledger.session() as session:
        run = _run_to_drive(context.ledger, session, context.run_id)
        _take_lease(context, session)
        run.status = RunStatus.RUNNING.value
        cluster = session.get_one(Cluster, run.cluster_id)
        context.work_dir = run.work_dir
        context.run_token = run.token
        context.cursor = EventCursor.from_dict(run.event_cursor) if run.event_cursor else None
        stored = StoredRun(
            cluster.name,
            cluster.cluster_type,
            dict(run.options),
            run.host_url,
            queue_rows(session, cluster.id),
        )
    context.lease_renewed = time.monotonic()
    return stored


def check_claimable(ledger: Ledger, run_id: int) -> None:
    """Refuse as `claim_run` would, without taking the run: it is over, or a live service owns
    it (`LeaseError`). For `run --detach --resume`, which must say so before it detaches."""
    with ledger.read_session() as session:
        run = _run_to_drive(ledger, session, run_id)
        if lease_is_live(run):
            raise LeaseError(run_id, run.owner_token, run.lease_expires_at, "cannot be taken")


def _run_to_drive(ledger: Ledger, session: Session, run_id: int) -> Run:
    """The run, unless there is none or it is over (`ServiceError`)."""
    run = session.get(Run, run_id)
    if run is None:
        raise ServiceError(f"There is no run {run_id} in {ledger.safe_url}.")
    if RunStatus(run.status) in FINAL_RUN_STATUSES:
        raise ServiceError(f"Run {run_id} is already over ({run.status}).")
    return run


def _take_lease(context: RunContext, session: Session) -> None:
    """Acquire the run; an owner on this machine whose process is gone loses it at once.

    (Elsewhere a crashed owner loses it when its lease expires.)
    """
    try:
        acquire_lease(session, context.run_id, context.owner, duration=context.lease)
    except LeaseError as error:
        if error.owner is None or not owner_is_gone(error.owner):
            raise
        take_over_lease(
            session, context.run_id, context.owner, previous=error.owner, duration=context.lease
        )
        log.warning("run %s: took over from %s, whose process is gone", context.run_id, error.owner)


def renew_if_due(context: RunContext) -> None:
    """Renew the lease once a third of it has passed: a slow round still renews in time."""
    if time.monotonic() - context.lease_renewed < context.lease.total_seconds() / 3:
        return
    with context.ledger.session() as session:
        renew_lease(session, context.run_id, context.owner, duration=context.lease)
    context.lease_renewed = time.monotonic()


def give_up(context: RunContext) -> None:
    """Release the run (a clean stop): the next service need not wait for the lease."""
    with context.ledger.session() as session:
        release_lease(session, context.run_id, context.owner)


def owner_token() -> str:
    """A new owner token, "host:pid:nonce": the host and pid tell whether its process lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
