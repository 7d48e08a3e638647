"""The host's side of autoscaling: the run's options, the checks, and the scaler in a run.

`AutoscaleOptions` is what `jobfleet run --autoscale …` asks for; it is stored with the run
(`runs.options["autoscale"]`) so that `--resume` scales the same way. `check_autoscale` refuses,
before anything is written, a backend whose distributor cannot list and drain its nodes (not a
`ScalableDistributor`) and a provisioner that is not installed. `RunScaler` drives a
`jobfleet.core.scaling.ClusterScaler` from the ledger: the shapes of the run's task instances
waiting (queued, or submitted and not started) and running, every decision an event of kind
`scaling` in the run's event log, and the scaler's last view of the nodes in
`runs.options["scaler_view"]`, which `jobfleet status RUN` shows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select

from jobfleet.core.cluster_protocol import ScalableDistributor
from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ledger import InstanceState, Ledger, Run, TaskInstance, utcnow
from jobfleet.core.host.ledger.transitions import record_event
from jobfleet.core.plugins import ClusterPlugin, PluginRegistry, ProvisionerPlugin
from jobfleet.core.resources import GIB, parse_cores, parse_gpus, parse_memory, parse_preemptible
from jobfleet.core.scaling import NodeTypeError, Shape, parse_node_types
from jobfleet.core.scaling.scaler import (
    SCALING_EVENT,
    ClusterScaler,
    ScalerConfig,
    ScalerError,
    ScalingEvent,
)

__all__ = [
    "SCALER_VIEW",
    "AutoscaleError",
    "AutoscaleOptions",
    "RunScaler",
    "check_autoscale",
    "instance_shape",
]

SCALER_VIEW: Final = "scaler_view"
"""The key of `runs.options` holding the scaler's last view of the nodes."""

_SCALABLE_MEMBERS: Final = ("get_nodes", "node_in_use", "ignore_node", "unignore_node")
_DEFAULT_MEMORY: Final = GIB  # a task that names no memory is taken to need this much
S = InstanceState
_WAITING: Final = (S.QUEUED.value, S.INSTANTIATED.value, S.LAUNCHED.value)
_RUNNING: Final = (S.RUNNING.value, S.TRIAGING.value, S.NO_HEARTBEAT.value)


class AutoscaleError(JobfleetError):
    """Autoscaling cannot be set up as asked."""


def _counts(text: str | int, names: list[str], what: str) -> dict[str, int]:
    """`--max-nodes 5` (each type) or `--max-nodes 5,2` (one per type, in order)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise AutoscaleError(
            f"--{what} {text!r} is not a count: give one whole number for every node type "
            f"(e.g. 5) or one per node type, in the order of --node-types (e.g. 5,2)."
        )
    if len(parts) == 1:
        return dict.fromkeys(names, int(parts[0]))
    if len(parts) != len(names):
        raise AutoscaleError(
            f"--{what} {text!r} gives {len(parts)} counts for {len(names)} node types "
            f"({', '.join(names)}): give one count, or one per node type."
        )
    return {name: int(part) for name, part in zip(names, parts, strict=True)}


@dataclass(frozen=True)
class AutoscaleOptions:
    """What `jobfleet run --autoscale` asked for. Checked when built."""

    provisioner: str
    node_types: str
    max_nodes: str
    min_nodes: str = "0"
    interval: float = 30.0
    """Seconds between two scaler steps."""
    beta: float = 0.1
    horizon: float = 1800.0
    join_timeout: float = 600.0
    provisioner_settings: dict[str, Any] = field(default_factory=dict)
    provisioner_parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.scaler_config()
        except (NodeTypeError, ScalerError) as exc:
            raise AutoscaleError(str(exc)) from exc
        if not self.interval > 0 or math.isinf(self.interval):
            raise AutoscaleError(f"The scaling interval must be positive, not {self.interval}.")

    def scaler_config(self) -> ScalerConfig:
        types = parse_node_types(self.node_types)
        names = [t.name for t in types]
        return ScalerConfig(
            tuple(types),
            max_nodes=_counts(self.max_nodes, names, "max-nodes"),
            min_nodes=_counts(self.min_nodes, names, "min-nodes"),
            beta=self.beta,
            horizon=self.horizon,
            join_timeout=self.join_timeout,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoscaleOptions:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def is_scalable_class(cls: type) -> bool:
    """Whether a distributor class has the `ScalableDistributor` methods."""
    return all(callable(getattr(cls, member, None)) for member in _SCALABLE_MEMBERS)


def check_autoscale(
    registry: PluginRegistry, cluster: ClusterPlugin, options: AutoscaleOptions
) -> ProvisionerPlugin:
    """Refuse what cannot work, before anything is written; the provisioner plugin if fine."""
    if not is_scalable_class(cluster.distributor_class):
        raise AutoscaleError(
            f"The backend {cluster.name!r} cannot be autoscaled: its distributor "
            f"{cluster.distributor_class.__name__} cannot list and drain nodes (it is not a "
            f"ScalableDistributor: {', '.join(_SCALABLE_MEMBERS)}). Backends that can: "
            "kubernetes, mesos; on Slurm, use elastic Slurm instead (docs/scaling.md)."
        )
    plugin = registry.get_provisioner(options.provisioner)
    plugin.settings(options.provisioner_settings)  # bad settings fail now, not in the service
    return plugin


def instance_shape(
    resources: Mapping[str, Any], *, started_at: datetime | None = None, now: datetime | None = None
) -> Shape:
    """A task instance's shape from its requested resources (canonical units).

    Its wall time is the requested runtime (0 when none), less what has run already for a
    running instance (at least a minute: it may overrun a little).
    """
    cores = parse_cores(resources["cores"]) if resources.get("cores") is not None else 1.0
    memory = resources.get("memory")
    gpus_value = resources.get("gpus")
    gpus = parse_gpus(gpus_value)[0] if gpus_value is not None else 0
    disk = resources.get("disk")
    wall = float(resources.get("runtime") or 0)
    if wall and started_at is not None:
        elapsed = ((now or utcnow()) - started_at).total_seconds()
        wall = max(wall - elapsed, 60.0)
    return Shape(
        wall_time=wall,
        memory=parse_memory(memory) if memory is not None else _DEFAULT_MEMORY,
        cores=float(cores),
        disk=parse_memory(disk) if disk is not None else 0,
        preemptible=parse_preemptible(resources.get("preemptible") or False),
        gpus=int(gpus),
    )


class RunScaler:
    """A `ClusterScaler` for one run: shapes from the ledger, events to it, a step per interval."""

    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        options: AutoscaleOptions,
        provisioner_plugin: ProvisionerPlugin,
        distributor: Any,
        *,
        cluster_name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(distributor, ScalableDistributor):
            raise AutoscaleError(
                f"The distributor {type(distributor).__name__} is not a ScalableDistributor."
            )
        self.ledger = ledger
        self.run_id = run_id
        self.options = options
        self.clock = clock
        settings = provisioner_plugin.settings(options.provisioner_settings)
        self.provisioner = provisioner_plugin.provisioner_class(
            cluster_name, settings=settings, **options.provisioner_parameters
        )
        config = options.scaler_config()
        self.provisioner.node_types = list(config.node_types)
        self.scaler = ClusterScaler(
            self.provisioner, distributor, config, clock=clock, record=self._record
        )
        self._pending: list[ScalingEvent] = []
        self._next = 0.0

    def _record(self, event: ScalingEvent) -> None:
        self._pending.append(event)

    def due(self) -> bool:
        return self.clock() >= self._next

    def step(self) -> bool:
        """One scaler step when its interval has passed; whether it ran."""
        if not self.due():
            return False
        self._next = self.clock() + self.options.interval
        waiting, running = self.shapes()
        views = self.scaler.step(waiting, running)
        with self.ledger.session() as session:
            for event in self._pending:
                record_event(
                    session, self.run_id, SCALING_EVENT, event.message, details=event.details
                )
            row = session.get_one(Run, self.run_id)
            row.options = {
                **row.options,
                SCALER_VIEW: {
                    "at": utcnow().isoformat(),
                    "provisioner": self.options.provisioner,
                    "node_types": self.options.node_types,
                    "nodes": [view.to_dict() for view in views],
                },
            }
        self._pending.clear()
        return True

    def shapes(self) -> tuple[list[Shape], list[Shape]]:
        """The shapes of the run's instances waiting and running, read from the ledger."""
        now = utcnow()
        waiting: list[Shape] = []
        running: list[Shape] = []
        cache: dict[str, Shape] = {}
        with self.ledger.read_session() as session:
            rows = session.execute(
                select(
                    TaskInstance.state, TaskInstance.requested_resources, TaskInstance.started_at
                ).where(
                    TaskInstance.run_id == self.run_id,
                    TaskInstance.state.in_(_WAITING + _RUNNING),
                )
            )
            for state, resources, started_at in rows:
                if state in _RUNNING:
                    running.append(instance_shape(resources, started_at=started_at, now=now))
                    continue
                key = json.dumps(resources, sort_keys=True, default=str)
                if key not in cache:
                    cache[key] = instance_shape(resources)
                waiting.append(cache[key])
        return waiting, running

    def release(self) -> None:
        """The run is over: terminate every node this scaler knows of (at once: nothing of
        the run runs any more)."""
        nodes = list(self.provisioner.get_provisioned_workers())
        if nodes:
            self.provisioner.terminate_nodes(nodes)
            with self.ledger.session() as session:
                record_event(
                    session,
                    self.run_id,
                    SCALING_EVENT,
                    f"The run is over: terminated {len(nodes)} node(s)",
                    details={"action": "release", "nodes": sorted(n.name for n in nodes)},
                )
