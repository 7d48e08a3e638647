"""The ledger's queues, and fitting a request to its queue.

`check_request` is the one place that finds a request's queue and checks the request against
its limits: `create_run` uses it before writing a run, the service (through `fit_request`)
before each submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobfleet.core.cluster_protocol import ClusterQueue
from jobfleet.core.host.ledger import Queue
from jobfleet.core.plugins import ClusterPlugin
from jobfleet.core.queue import DEFAULT_QUEUE
from jobfleet.core.resources import QueueLimits


def request_queue(resources: Mapping[str, Any]) -> str:
    """The queue a request goes to: the one it names, else the default queue."""
    return str(resources.get("queue") or DEFAULT_QUEUE)


def check_request(queues: Mapping[str, ClusterQueue], resources: Mapping[str, Any]) -> str | None:
    """Why the request cannot run on its queue, or None when it can.

    Not strict: a request over the queue's limits can run once coerced to them.
    """
    name = request_queue(resources)
    queue = queues.get(name)
    if queue is None:
        return f"the queue {name!r} is not in the ledger"
    ok, message = queue.validate_resources(strict=False, **resources)
    return None if ok else message


@dataclass(frozen=True)
class QueueFit:
    """A request fitted to its queue, or why it cannot be."""

    problem: str | None
    """Why the request cannot run on its queue, or None when it can."""
    coerced: dict[str, Any]
    """The request as the queue coerced it (empty when it cannot run)."""
    adjustments: list[str]
    """What the coercion changed, in words, for the adjustment event."""


def fit_request(queues: Mapping[str, ClusterQueue], resources: Mapping[str, Any]) -> QueueFit:
    """Check the request against its queue, then coerce it to the queue's limits."""
    problem = check_request(queues, resources)
    if problem is not None:
        return QueueFit(problem, {}, [])
    coerced = queues[request_queue(resources)].coerce_resources(**resources)
    # `adjustments` is jobfleet's addition to the protocol: a Jobmon queue returns a plain dict.
    adjustments = [str(a) for a in getattr(coerced, "adjustments", ())]
    return QueueFit(None, dict(coerced), adjustments)


def queue_rows(session: Session, cluster_id: int) -> dict[str, Queue]:
    """A cluster's queues in the ledger, by name."""
    query = select(Queue).where(Queue.cluster_id == cluster_id)
    return {row.name: row for row in session.scalars(query)}


def queue_objects(plugin: ClusterPlugin, rows: Mapping[str, Queue]) -> dict[str, ClusterQueue]:
    """The backend's queue objects for the ledger's queue rows."""
    return {
        name: plugin.queue_class(row.id, row.name, dict(row.parameters))
        for name, row in rows.items()
    }


def queue_limits(queues: Mapping[str, ClusterQueue]) -> dict[str, QueueLimits]:
    """Each queue's limits: its own when it has them (`BaseClusterQueue.limits`), else read
    from its parameters."""
    limits = {}
    for name, queue in queues.items():
        found = getattr(queue, "limits", None)
        limits[name] = (
            found
            if isinstance(found, QueueLimits)
            else QueueLimits.from_parameters(queue.parameters)
        )
    return limits
