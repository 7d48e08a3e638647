"""What the steps of a round share: the run being driven and the service's connections to it.

Each step module (lease, kills, status, reports, triage, submission, retries, …) is a set of
functions over one `RunContext`. A step imports this module and the steps it builds on, which
only ever come earlier in this order: context ← retries ← reports ← kills, recovery, triage;
status ← triage; retries ← submission. None imports the service class (`core`), so the
imports never go in a circle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobfleet.core.channel import Channel, EventCursor
from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue
from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ledger import InstanceState, Ledger, TaskInstance, in_batches, utcnow
from jobfleet.core.host.queues import QueueFit
from jobfleet.core.host.runs import ServiceOptions

S = InstanceState
# Instances the backend has (or had) accepted: the ones its status query is about.
LAUNCHED_STATES: Final = (S.LAUNCHED, S.RUNNING, S.TRIAGING, S.NO_HEARTBEAT)
# Bulk UPDATEs by id: the ORM need not look for the rows among the objects it has loaded
# (which costs time quadratic in the number of rows).
NO_SYNC: Final = {"synchronize_session": False}


class ServiceError(JobfleetError):
    """The service cannot drive the run (its lease was lost, the run is over, …)."""


@dataclass
class RunContext:
    """The run one service drives, and what the service knows about it between steps."""

    ledger: Ledger
    run_id: int
    owner: str
    """The lease's owner token: "host:pid:nonce"."""
    lease: timedelta
    options: ServiceOptions = field(default_factory=ServiceOptions)
    distributor: ClusterDistributor | None = None
    channel: Channel | None = None
    """The run's file channel, as the host reads and writes it."""
    served_channel: Any = None
    """`host.channel_server.ServedChannel` while the channel is also served over HTTP."""
    queues: dict[str, ClusterQueue] = field(default_factory=dict)
    """The backend's queue objects, by name."""
    queue_rows: dict[str, int] = field(default_factory=dict)
    """The ledger id of each queue, by name (arrays refer to it)."""
    cursor: EventCursor | None = None
    """How far the channel has been read; saved in the ledger with the changes it caused."""
    work_dir: str | None = None
    run_token: str | None = None
    """The run's token (`runs.token`): in every spec, and required in every report."""
    started_at: datetime = field(default_factory=utcnow)
    """When this service started: attempts submitted earlier were submitted by a crashed one."""
    lease_renewed: float = 0.0
    """`time.monotonic()` of the last renewal."""
    asked: dict[int, float] = field(default_factory=dict)
    """Triage: when (monotonic) the backend was last asked about each silent instance."""
    fits: dict[str, QueueFit] = field(default_factory=dict)
    """Submission: each distinct request checked against its queue once, by its JSON text."""
    ended: set[int] = field(default_factory=set)
    """Attempts that ended since their specs were last withdrawn from the channel."""
    scaler: Any = None
    """`host.autoscale.RunScaler` when the run autoscales its cluster."""

    def started_distributor(self) -> ClusterDistributor:
        if self.distributor is None:
            raise ServiceError("The service is not started.")
        return self.distributor

    def started_channel(self) -> Channel:
        if self.channel is None:
            raise ServiceError("The service is not started.")
        return self.channel


def load_instances(session: Session, ids: Iterable[int]) -> list[TaskInstance]:
    """The task instances with these ids, as ORM objects (in batches of ids)."""
    found: list[TaskInstance] = []
    for batch in in_batches(ids):
        found.extend(session.scalars(select(TaskInstance).where(TaskInstance.id.in_(batch))).all())
    return found
