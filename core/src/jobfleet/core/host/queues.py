"""The ledger's queues: fitting a request to its queue, and what `jobfleet queues` changes.

`check_request` is the one place that finds a request's queue and checks the request against
its limits: `create_run` uses it before writing a run, the service (through `fit_request`)
before each submission. `list_queues`, `add_queue`, `remove_queue` and `save_queues` are the
ledger side of `jobfleet queues list/add/remove/sync`; they take a session, so that the
command decides the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobfleet.core.cluster_protocol import ClusterQueue
from jobfleet.core.errors import JobfleetError, ResourceError, UnknownClusterError
from jobfleet.core.host.ledger import Array, Cluster, Queue
from jobfleet.core.host.queries import NotFoundError
from jobfleet.core.plugins import ClusterPlugin, PluginRegistry, default_registry
from jobfleet.core.queue import DEFAULT_QUEUE
from jobfleet.core.resources import QueueLimits, parse_gpus


def request_queue(resources: Mapping[str, Any]) -> str:
    """The queue a request goes to: the one it names, else the default queue."""
    return str(resources.get("queue") or DEFAULT_QUEUE)


def check_request(queues: Mapping[str, ClusterQueue], resources: Mapping[str, Any]) -> str | None:
    """Why the request cannot run on its queue, or None when it can.

    Not strict: a request over the queue's limits can run once coerced to them, except for
    GPUs: a task is never given fewer GPUs than it asks for (a program written for N GPUs
    fails with fewer), so a GPU count over the queue's `max_gpus` is refused.
    """
    name = request_queue(resources)
    queue = queues.get(name)
    if queue is None:
        return f"the queue {name!r} is not in the ledger"
    ok, message = queue.validate_resources(strict=False, **resources)
    if not ok:
        return message
    return _too_many_gpus(queue, resources)


def _too_many_gpus(queue: ClusterQueue, resources: Mapping[str, Any]) -> str | None:
    if resources.get("gpus") is None:
        return None
    try:
        wanted, _ = parse_gpus(resources["gpus"])
    except ResourceError:  # a backend's own spelling, which its queue read: not ours to judge
        return None
    most = queue_limits({queue.queue_name: queue})[queue.queue_name].max_gpus
    if most is None or wanted <= most:
        return None
    return (
        f"gpus {wanted} is above the queue maximum of {most}, and GPUs are never reduced to fit "
        "(a program written for more GPUs fails with fewer)."
    )


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


def queue_objects(
    plugin: ClusterPlugin, rows: Mapping[str, Queue], settings: Any = None
) -> dict[str, ClusterQueue]:
    """The backend's queue objects for the ledger's queue rows.

    Settings that size the backend (the local pool's cores, memory and GPUs) may say so with a
    `queue_parameters()` method: its limits go under each queue's own parameters, so that a
    request no setting allows is refused (or clamped) like one over a queue's limits.
    """
    sized = getattr(settings, "queue_parameters", None)
    base: dict[str, Any] = dict(sized()) if callable(sized) else {}
    return {
        name: plugin.queue_class(row.id, row.name, {**base, **row.parameters})
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


# --- administration (`jobfleet queues`) ---------------------------------------------------------


class QueueError(JobfleetError):
    """A queue cannot be added or removed as asked."""


@dataclass(frozen=True)
class QueueEntry:
    """One queue of one cluster, as `jobfleet queues list` shows it."""

    cluster: str
    cluster_type: str
    queue: str
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueAdded:
    """What `add_queue` did."""

    replaced: bool
    """The queue existed: its parameters were replaced."""
    new_cluster: bool
    """The cluster was not in the ledger: it was added too."""
    cluster_type: str


def list_queues(session: Session, cluster_name: str | None = None) -> list[QueueEntry]:
    """Every cluster's queues (or one cluster's), by cluster and queue name."""
    statement = (
        select(Cluster.name, Cluster.cluster_type, Queue.name, Queue.parameters)
        .join(Queue, Queue.cluster_id == Cluster.id)
        .order_by(Cluster.name, Queue.name)
    )
    if cluster_name is not None:
        find_cluster(session, cluster_name)  # an unknown cluster is an error, not an empty list
        statement = statement.where(Cluster.name == cluster_name)
    return [QueueEntry(*row) for row in session.execute(statement)]


def find_cluster(session: Session, name: str) -> Cluster:
    """The cluster named `name`; `NotFoundError` naming the known ones when there is none."""
    cluster = session.scalar(select(Cluster).where(Cluster.name == name))
    if cluster is None:
        known = ", ".join(session.scalars(select(Cluster.name).order_by(Cluster.name))) or "none"
        raise NotFoundError(f"There is no cluster {name!r} in the ledger (clusters: {known}).")
    return cluster


def ensure_cluster(session: Session, name: str) -> Cluster:
    """The cluster named `name`, added when it is not in the ledger yet (its type: its name,
    the backend it was made for)."""
    cluster = session.scalar(select(Cluster).where(Cluster.name == name))
    if cluster is None:
        cluster = Cluster(name=name, cluster_type=name)
        session.add(cluster)
        session.flush()
    return cluster


def add_queue(
    session: Session,
    cluster_name: str,
    queue_name: str,
    parameters: dict[str, Any],
    *,
    replace: bool = False,
    registry: PluginRegistry | None = None,
) -> QueueAdded:
    """Add the queue, or replace its parameters (only with `replace`).

    A cluster not yet in the ledger is added when an installed backend has its name.
    """
    cluster = session.scalar(select(Cluster).where(Cluster.name == cluster_name))
    new_cluster = cluster is None
    if cluster is None:
        # The plugins are loaded only here: adding to a known cluster needs none of them.
        installed = (registry or default_registry()).names()
        if cluster_name not in installed:
            raise UnknownClusterError(
                cluster_name,
                installed,
                f"There is no cluster {cluster_name!r} in the ledger, and no backend is "
                "installed under that name to add it with.",
            )
        cluster = ensure_cluster(session, cluster_name)
    queue = _find_queue(session, cluster, queue_name)
    if queue is not None and not replace:
        raise QueueError(
            f"The queue {queue_name!r} of cluster {cluster_name!r} exists already; "
            "add --replace to replace its parameters."
        )
    if queue is None:
        session.add(Queue(cluster_id=cluster.id, name=queue_name, parameters=parameters))
    else:
        queue.parameters = parameters
    return QueueAdded(queue is not None, new_cluster, cluster.cluster_type)


def remove_queue(session: Session, cluster_name: str, queue_name: str) -> None:
    """Remove the queue; refused while arrays of past runs refer to it."""
    cluster = find_cluster(session, cluster_name)
    queue = _find_queue(session, cluster, queue_name)
    if queue is None:
        names = ", ".join(
            session.scalars(
                select(Queue.name).where(Queue.cluster_id == cluster.id).order_by(Queue.name)
            )
        )
        raise NotFoundError(
            f"The cluster {cluster_name!r} has no queue {queue_name!r} "
            f"(its queues: {names or 'none'})."
        )
    arrays, runs = session.execute(
        select(func.count(), func.count(func.distinct(Array.run_id))).where(
            Array.queue_id == queue.id
        )
    ).one()
    if arrays:
        raise QueueError(
            f"The queue {queue_name!r} of cluster {cluster_name!r} is used by "
            f"{_count(arrays, 'array')} (of {_count(runs, 'run')}), which keep "
            "referring to it: it cannot be removed."
        )
    session.delete(queue)


def save_queues(
    session: Session, cluster_name: str, parameters: Mapping[str, dict[str, Any]]
) -> set[str]:
    """Add each queue, or replace its parameters; others are left as they are. Returns the
    names of the queues that were there already."""
    cluster = ensure_cluster(session, cluster_name)
    existing = queue_rows(session, cluster.id)
    for name, values in parameters.items():
        if name in existing:
            existing[name].parameters = values
        else:
            session.add(Queue(cluster_id=cluster.id, name=name, parameters=values))
    return set(existing)


def _find_queue(session: Session, cluster: Cluster, name: str) -> Queue | None:
    return session.scalar(select(Queue).where(Queue.cluster_id == cluster.id, Queue.name == name))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
