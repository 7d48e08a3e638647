"""Creating a run: its tasks, their first attempts, its work directory and options.

Everything is checked before anything is written: the backend exists and takes the settings,
every queue a task names is in the ledger (only the default queue is added by itself), every
task's resources fit its queue (or can be coerced to).
A run is then written in one transaction, so a failure leaves no half run behind.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy import insert, literal, select
from sqlalchemy.orm import Session

from jobfleet.core.channel import open_channel
from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ledger import (
    Cluster,
    Event,
    InstanceState,
    Ledger,
    Queue,
    Run,
    RunStatus,
    Task,
    TaskInstance,
    utcnow,
)
from jobfleet.core.host.ledger.models import JsonType, UTCDateTime
from jobfleet.core.host.queues import (
    check_request,
    ensure_cluster,
    queue_objects,
    queue_rows,
    request_queue,
)
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.core.plugins import ClusterPlugin, PluginRegistry, default_registry
from jobfleet.core.private import make_private_dirs
from jobfleet.core.queue import DEFAULT_QUEUE


class RunDefinitionError(JobfleetError):
    """A run cannot be created as asked (nothing was written)."""


@dataclass(frozen=True)
class ServiceOptions:
    """How the distributor service drives a run; stored with the run so `--resume` reuses them."""

    array_size: int = 1000
    """Most instances submitted in one array."""
    heartbeat_interval: float = 30.0
    """Seconds between a running task's heartbeats."""
    heartbeat_grace: float = 10.0
    """Silence for 3 heartbeat intervals plus this many seconds sends an instance to triage."""
    poll_interval: float = 0.2
    """Seconds between rounds while things change (the pause grows to `max_poll_interval`)."""
    max_poll_interval: float = 2.0
    triage_interval: float = 2.0
    """Seconds between two questions to the backend about the same silent instance."""
    triage_timeout: float = 300.0
    """Seconds a silent instance may stay unresolved before it is given up as U."""
    submit_batch: int = 10_000
    """Most queued instances submitted in one round (the rest wait for the next)."""

    def __post_init__(self) -> None:
        if not 1 <= self.array_size <= 1_000_000:
            raise RunDefinitionError(
                f"array size must be 1 to 1000000 instances, not {self.array_size}"
            )
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not value > 0:
                raise RunDefinitionError(f"{item.name} must be a positive number, not {value}")

    @property
    def heartbeat_deadline(self) -> float:
        return 3 * self.heartbeat_interval + self.heartbeat_grace

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceOptions:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


CHANNEL_TRANSPORTS = ("file", "http", "auto")


@dataclass(frozen=True)
class ChannelOptions:
    """How the run's channel reaches its wrappers; stored with the run (`options["channel"]`)
    so that `--resume` serves it again at the same address.

    The channel itself is always the file channel in the run's work directory; with
    `transport="http"` the host also serves it over HTTP(S) (`host.channel_server`). The token
    is not here: it is in a 0600 file of the channel directory, as the ledger may be shared.
    """

    transport: str = "file"
    """`file`, `http`, or `auto` (given to `create_run` only: http when the backend's
    distributor `needs_network_channel`, else file)."""
    bind: str = "127.0.0.1:0"
    """Where the server listens, `HOST:PORT`; port 0 takes any free port, and the port taken
    is then stored here, so that a resumed host binds the same one."""
    address: str | None = None
    """The base URL wrappers reach the server at, when it is not the bind address (a pod
    network, a load balancer); None: the bind address (loopback for a wildcard bind)."""
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in CHANNEL_TRANSPORTS:
            raise RunDefinitionError(
                f"The channel transport must be file, http or auto, not {self.transport!r}."
            )
        if self.transport == "file":
            return
        from jobfleet.core.host.channel_server import (
            ChannelServerError,
            check_address,
            parse_bind,
        )

        try:
            parse_bind(self.bind)
            if bool(self.tls_cert) != bool(self.tls_key):
                raise RunDefinitionError("TLS needs both --channel-tls-cert and --channel-tls-key.")
            for path in (self.tls_cert, self.tls_key):
                if path and not os.path.isfile(path):
                    raise RunDefinitionError(f"The channel's TLS file {path} does not exist.")
            if self.address is not None:
                check_address(self.address, tls=bool(self.tls_cert))
        except ChannelServerError as exc:
            raise RunDefinitionError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelOptions:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def default_work_root(ledger: Ledger) -> Path:
    """Where runs keep their channel and logs: beside a SQLite ledger, else ./.jobfleet/runs."""
    database = ledger.url.database
    if ledger.url.get_backend_name() == "sqlite" and database:
        return Path(database).resolve().parent / "runs"
    return Path(".jobfleet", "runs").resolve()


def create_run(
    ledger: Ledger,
    tasks: Sequence[TaskDefinition],
    *,
    cluster: str = "multiprocess",
    name: str | None = None,
    cluster_settings: Mapping[str, Any] | None = None,
    options: ServiceOptions | None = None,
    work_root: Path | None = None,
    registry: PluginRegistry | None = None,
    new_queues: bool = False,
    channel: ChannelOptions | None = None,
    autoscale: Any = None,
) -> int:
    """Check everything, then write the run, its tasks and their first attempts; return its id.

    A queue the tasks name (or fall back to) that the ledger does not have is refused, so that
    a misspelt name cannot become a queue without limits; `new_queues` adds such queues without
    limits of their own instead. The default queue is always added when missing.

    `channel` says how wrappers reach the run's channel; by default a file channel, or an
    http one on loopback when the backend's distributor `needs_network_channel`.
    """
    if not tasks:
        raise RunDefinitionError("A run needs at least one task.")
    registry = registry or default_registry()
    plugin = registry.get_cluster(cluster)
    if autoscale is not None:  # an `autoscale.AutoscaleOptions`: refused before any write
        from jobfleet.core.host.autoscale import check_autoscale

        check_autoscale(registry, plugin, autoscale)
    settings_values = dict(cluster_settings or {})
    settings = plugin.settings(settings_values, os.environ)  # bad ones fail before any write
    options = options or ServiceOptions()
    channel = channel or ChannelOptions(transport="auto")
    if channel.transport == "auto":
        if getattr(plugin.distributor_class, "needs_network_channel", False):
            channel = replace(channel, transport="http")
        else:
            channel = ChannelOptions()
    root = work_root or default_work_root(ledger)
    with ledger.session() as session:
        cluster_row = ensure_cluster(session, cluster)
        queues = _queue_rows(session, cluster_row, tasks, new_queues=new_queues)
        _check_resources(plugin, queues, tasks, settings)
        run = Run(
            name=name or _default_name(tasks),
            cluster_id=cluster_row.id,
            status=RunStatus.CREATED.value,
            token=secrets.token_hex(8),
            options={
                "service": options.to_dict(),
                "cluster_settings": settings_values,
                "channel": channel.to_dict(),
                **({"autoscale": autoscale.to_dict()} if autoscale is not None else {}),
            },
        )
        session.add(run)
        session.flush()
        # The token keeps apart the runs of two ledgers that share a work root (both number
        # their runs from 1): a run's directory, and so its channel, is its own.
        work_dir = root / f"run-{run.id}-{run.token}"
        run.work_dir = str(work_dir)
        run.host_url = f"file://{work_dir / 'channel'}"
        _insert_tasks(session, run.id, tasks)
        # The directory is made inside the transaction: if it cannot be, nothing is written.
        # Owner-only, like everything in it: the specs and logs may hold the tasks' secrets.
        make_private_dirs(work_dir / "logs")
        open_channel(run.host_url, create=True).close()
        return run.id


def _default_name(tasks: Sequence[TaskDefinition]) -> str:
    first = tasks[0].name
    return first if len(tasks) == 1 else f"{first} and {len(tasks) - 1} more"


def _queue_names(tasks: Sequence[TaskDefinition]) -> set[str]:
    names = {DEFAULT_QUEUE}
    for task in tasks:
        names.add(request_queue(task.resources))
        names.update(task.fallback_queues)
    return names


def _queue_rows(
    session: Session, cluster: Cluster, tasks: Sequence[TaskDefinition], *, new_queues: bool
) -> dict[str, Queue]:
    """The cluster's queues by name. A queue not yet in the ledger is added without limits of
    its own (the backend's queue class supplies what it knows, e.g. the machine's size) when it
    is the default queue or `new_queues` allows it; otherwise the run is refused."""
    rows = queue_rows(session, cluster.id)
    missing = _queue_names(tasks) - rows.keys()
    unknown = sorted(missing - {DEFAULT_QUEUE})
    if unknown and not new_queues:
        raise RunDefinitionError(_unknown_queue(cluster.name, unknown[0], rows, tasks))
    for name in sorted(missing):
        rows[name] = Queue(cluster_id=cluster.id, name=name, parameters={})
        session.add(rows[name])
    session.flush()
    return rows


def _unknown_queue(
    cluster: str, name: str, rows: Mapping[str, Queue], tasks: Sequence[TaskDefinition]
) -> str:
    task = next(t for t in tasks if name in (request_queue(t.resources), *t.fallback_queues))
    where = f" (line {task.line})" if task.line else ""
    return (
        f"Task {task.name!r}{where} names the queue {name!r}, which the cluster {cluster!r} "
        f"does not have in the ledger (its queues: {', '.join(sorted(rows)) or 'none yet'}). "
        f"Add it with its limits first (jobfleet queues add {cluster} {name} --max-memory …), "
        "or pass --new-queue to create it without limits of its own."
    )


def _check_resources(
    plugin: ClusterPlugin, rows: Mapping[str, Queue], tasks: Sequence[TaskDefinition], settings: Any
) -> None:
    queues = queue_objects(plugin, rows, settings)
    # Checked once per distinct request: a run of a million tasks has a handful.
    seen: dict[str, str | None] = {}
    for task in tasks:
        key = json.dumps(task.resources, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = check_request(queues, task.resources)
        problem = seen[key]
        if problem is not None:
            where = f" (line {task.line})" if task.line else ""
            raise RunDefinitionError(
                f"Task {task.name!r}{where} cannot run on queue "
                f"{request_queue(task.resources)!r} of {plugin.name}: {problem}"
            )


def _insert_tasks(session: Session, run_id: int, tasks: Sequence[TaskDefinition]) -> None:
    """The tasks in one executemany; their first attempts and events each in one INSERT …
    SELECT (no ids travel back and forth: RETURNING in order costs a statement per row)."""
    now = utcnow()
    session.execute(
        insert(Task),
        [
            {
                "run_id": run_id,
                "name": task.name,
                "command": task.command,
                "resources": dict(task.resources),
                "env": dict(task.env),
                "max_attempts": task.max_attempts,
                "options": {
                    "resource_scale": task.resource_scale,
                    "fallback_queues": list(task.fallback_queues),
                },
            }
            for task in tasks
        ],
    )
    stamp = literal(now, UTCDateTime())
    session.execute(
        insert(TaskInstance).from_select(
            [
                "task_id",
                "run_id",
                "attempt",
                "state",
                "requested_resources",
                "created_at",
                "state_at",
                "triage_count",
            ],
            select(
                Task.id,
                Task.run_id,
                literal(1),
                literal(InstanceState.QUEUED.value),
                Task.resources,
                stamp,
                stamp,
                literal(0),
            ).where(Task.run_id == run_id),
        )
    )
    session.execute(
        insert(Event).from_select(
            ["run_id", "task_instance_id", "kind", "to_state", "at", "message", "details"],
            select(
                TaskInstance.run_id,
                TaskInstance.id,
                literal("transition"),
                literal(InstanceState.QUEUED.value),
                stamp,
                literal("attempt 1 queued"),
                literal({}, JsonType),
            ).where(TaskInstance.run_id == run_id),
        )
    )
