"""The cluster scaler: sizes a cluster from the work waiting, through a provisioner.

Pure logic with no host in it: `ClusterScaler.step(waiting, running)` is given the shapes of the
task instances waiting and running, reads the provisioner's nodes and the distributor's view of
them, and launches, drains and terminates nodes. Time comes from an injected clock and every
decision goes to an injected `record` callable, so the host drives it in real time (writing
events to the ledger) and `bench/scaling.py` and the tests drive it in virtual time.

One step:

1. list the provisioner's nodes (nodes gone since the last step were preempted or removed
   outside jobfleet) and the distributor's (`get_nodes`): a node has *joined* once the
   distributor lists it under one of its names (`Node.known_names`);
2. terminate nodes that have not joined within `join_timeout`;
3. terminate draining nodes that no longer run anything (`node_in_use` is false);
4. bin-pack the running and waiting shapes into the node types (`packing.pack`), smooth the
   count of each pool with an exponentially weighted estimate (`beta`: the weight of the past),
   and clamp it to the per-type minimum and maximum;
5. scale up (undrain draining nodes first, then launch; spot first, and on-demand nodes of the
   same type for the part of a spot request the provider could not fill) or scale down
   (`ignore_node`, then terminate once idle; nodes that never joined are terminated at once).
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobfleet.core.cluster_protocol import NodeInfo, ScalableDistributor
from jobfleet.core.errors import JobfleetError
from jobfleet.core.scaling.node_types import NodeType
from jobfleet.core.scaling.packing import Pool, pack
from jobfleet.core.scaling.provisioner import Node, Provisioner
from jobfleet.core.scaling.shape import Shape

__all__ = [
    "ClusterScaler",
    "NodeState",
    "NodeView",
    "ScalerConfig",
    "ScalerError",
    "ScalingEvent",
]

SCALING_EVENT: Final = "scaling"
"""The ledger event kind of every scaler decision (run-level: no task instance)."""


class ScalerError(JobfleetError, ValueError):
    """The scaler's configuration cannot work."""


class NodeState(enum.StrEnum):
    LAUNCHING = "launching"
    """Launched by the provisioner, not yet listed by the distributor."""
    JOINED = "joined"
    DRAINING = "draining"
    """Ignored by the distributor; terminated once nothing of ours runs on it."""


@dataclass(frozen=True)
class ScalerConfig:
    """How the scaler sizes the cluster. Counts are per node type."""

    node_types: tuple[NodeType, ...]
    max_nodes: Mapping[str, int]
    min_nodes: Mapping[str, int] = field(default_factory=dict)
    beta: float = 0.1
    """Inertia: the weight of the previous estimate in the smoothed one (0: none)."""
    horizon: float = 1800.0
    """Seconds within which the nodes asked for should finish the work (Toil's target time);
    shorter means more nodes sooner."""
    default_wall_time: float = 600.0
    """Seconds a task of unknown runtime is assumed to run."""
    join_timeout: float = 600.0
    """Seconds a launched node may take to show up in the distributor before it is terminated."""
    spot_fallback: bool = True
    """Launch on-demand nodes of the same type for spot capacity the provider could not give."""

    def __post_init__(self) -> None:
        if not self.node_types:
            raise ScalerError("Autoscaling needs at least one node type.")
        names = [t.name for t in self.node_types]
        for name in set(self.max_nodes) | set(self.min_nodes):
            if name not in names:
                raise ScalerError(f"Node count given for {name!r}, which is not a node type.")
        for name in names:
            low, high = self.min_nodes.get(name, 0), self.max_nodes.get(name, 0)
            if low < 0 or high < 0 or low > high:
                raise ScalerError(
                    f"Node type {name!r}: the minimum ({low}) must be 0 or more and at most "
                    f"the maximum ({high})."
                )
        if not 0 <= self.beta < 1:
            raise ScalerError(f"beta must be at least 0 and below 1, not {self.beta}.")
        for label in ("horizon", "default_wall_time", "join_timeout"):
            value = getattr(self, label)
            if not value > 0 or math.isinf(value):
                raise ScalerError(f"{label} must be a positive number of seconds, not {value}.")


@dataclass(frozen=True)
class ScalingEvent:
    """One decision or observation, for the ledger's event log."""

    message: str
    details: dict[str, Any]


@dataclass
class _Tracked:
    node: Node
    launched: float
    state: NodeState = NodeState.LAUNCHING
    seen_as: str | None = None
    pool: tuple[str, bool] | None = None
    """The pool whose target the node counts toward: an on-demand node launched because spot
    capacity fell short counts toward the spot pool that asked for it."""

    @property
    def pool_key(self) -> tuple[str, bool]:
        return self.pool or (self.node.node_type, self.node.preemptible)


@dataclass(frozen=True)
class NodeView:
    """One node as the scaler last saw it (what `jobfleet status` shows)."""

    name: str
    node_type: str
    preemptible: bool
    state: str
    distributor_name: str | None
    age: float
    cores_used: float | None = None
    cores_total: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_type": self.node_type,
            "preemptible": self.preemptible,
            "state": self.state,
            "distributor_name": self.distributor_name,
            "age": round(self.age, 1),
            "cores_used": self.cores_used,
            "cores_total": self.cores_total,
        }


class _Deferred(Exception):
    """A provisioner call failed; the step ends and the next one tries again."""


class ClusterScaler:
    """Launches and removes nodes so that the cluster follows the work. Not thread-safe."""

    def __init__(
        self,
        provisioner: Provisioner,
        distributor: ScalableDistributor,
        config: ScalerConfig,
        *,
        clock: Callable[[], float],
        record: Callable[[ScalingEvent], None] = lambda event: None,
    ) -> None:
        if not isinstance(distributor, ScalableDistributor):
            raise ScalerError(
                f"{type(distributor).__name__} cannot list or drain its nodes (it is not a "
                "ScalableDistributor), so it cannot be autoscaled."
            )
        self.provisioner = provisioner
        self.distributor = distributor
        self.config = config
        self.clock = clock
        self.record = record
        self._nodes: dict[str, _Tracked] = {}
        self._smoothed: dict[tuple[str, bool], float] = {}
        self._pools = self._build_pools()
        self._dist_nodes: dict[str, NodeInfo] = {}
        self._last_unplaceable: str | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _build_pools(self) -> list[Pool]:
        """Spot pools first (in the order given), then on-demand pools of every type."""
        spot, on_demand = [], []
        for node_type in self.config.node_types:
            if node_type.preemptible:
                shape = self.provisioner.get_node_shape(node_type.name, preemptible=True)
                spot.append(Pool(node_type.name, True, shape))
            shape = self.provisioner.get_node_shape(node_type.name, preemptible=False)
            on_demand.append(Pool(node_type.name, False, shape))
        return spot + on_demand

    @property
    def pools(self) -> list[Pool]:
        return list(self._pools)

    # -- the view -------------------------------------------------------------------------

    def nodes(self) -> list[NodeView]:
        now = self.clock()
        views = []
        for name, tracked in sorted(self._nodes.items()):
            info = self._dist_nodes.get(tracked.seen_as or "")
            views.append(
                NodeView(
                    name=name,
                    node_type=tracked.node.node_type,
                    preemptible=tracked.node.preemptible,
                    state=tracked.state.value,
                    distributor_name=tracked.seen_as,
                    age=now - tracked.launched,
                    cores_used=None if info is None else info.cores_used,
                    cores_total=None if info is None else info.cores_total,
                )
            )
        return views

    # -- one step -------------------------------------------------------------------------

    def step(self, waiting: Sequence[Shape], running: Sequence[Shape] = ()) -> list[NodeView]:
        """Look, decide and act once; returns the nodes as they now stand."""
        try:
            self._observe()
            self._expire_unjoined()
            self._finish_draining()
            targets, waiting_per_pool, unplaceable = self._targets(waiting, running)
            self._apply(targets, waiting_per_pool, len(waiting))
            if unplaceable:
                self._note_unplaceable(unplaceable)
        except _Deferred:
            pass
        except Exception as exc:
            # The distributor failed (an API server away): the run goes on, the next step
            # looks again.
            self._emit(
                f"The scaling step failed: {type(exc).__name__}: {exc} (trying at the next step)",
                action="error",
                retryable=True,
            )
        return self.nodes()

    def _call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            retry = False
            with contextlib.suppress(Exception):  # a broken predicate means: do not retry
                retry = bool(self.provisioner.retry_predicate(exc))
            verdict = "retrying at the next step" if retry else "giving up for this step"
            self._emit(
                f"Could not {what}: {type(exc).__name__}: {exc} ({verdict})",
                action="error",
                retryable=retry,
            )
            raise _Deferred from exc

    def _emit(self, message: str, **details: Any) -> None:
        self.record(ScalingEvent(message, details))

    def _observe(self) -> None:
        now = self.clock()
        listed = self._call("list the provisioned nodes", self.provisioner.get_provisioned_workers)
        by_name = {node.name: node for node in listed}
        for name in list(self._nodes):
            if name not in by_name:
                tracked = self._nodes.pop(name)
                self._emit(
                    f"Node {name} ({tracked.node.node_type}) is gone: preempted, or removed "
                    "outside jobfleet",
                    action="gone",
                    node=name,
                    node_type=tracked.node.node_type,
                )
        for name, node in by_name.items():
            if name not in self._nodes:
                self._nodes[name] = _Tracked(node, now)
        self._dist_nodes = dict(self.distributor.get_nodes())
        for tracked in self._nodes.values():
            tracked.node = by_name[tracked.node.name]
            if tracked.state is NodeState.LAUNCHING:
                seen = tracked.node.known_names() & self._dist_nodes.keys()
                if seen:
                    tracked.seen_as = min(seen)
                    tracked.state = NodeState.JOINED

    def _terminate(self, trackeds: Sequence[_Tracked], reason: str, action: str) -> None:
        if not trackeds:
            return
        self._call("terminate nodes", self.provisioner.terminate_nodes, [t.node for t in trackeds])
        for tracked in trackeds:
            self._nodes.pop(tracked.node.name, None)
            if tracked.seen_as:
                with contextlib.suppress(Exception):  # the node is gone: best effort
                    self.distributor.unignore_node(tracked.seen_as)
        names = sorted(t.node.name for t in trackeds)
        self._emit(
            f"Terminated {len(names)} node{'s' if len(names) != 1 else ''} "
            f"({', '.join(names)}): {reason}",
            action=action,
            nodes=names,
        )

    def _expire_unjoined(self) -> None:
        now = self.clock()
        late = [
            t
            for t in self._nodes.values()
            if t.state is NodeState.LAUNCHING and now - t.launched > self.config.join_timeout
        ]
        self._terminate(late, f"never joined within {self.config.join_timeout:g} s", "join_timeout")

    def _finish_draining(self) -> None:
        idle = [
            t
            for t in self._nodes.values()
            if t.state is NodeState.DRAINING
            and (t.seen_as is None or not self.distributor.node_in_use(t.seen_as))
        ]
        self._terminate(idle, "drained, nothing of ours runs on them", "scale_down")

    # -- deciding -------------------------------------------------------------------------

    def _targets(
        self, waiting: Sequence[Shape], running: Sequence[Shape]
    ) -> tuple[dict[tuple[str, bool], int], Counter[Pool], Counter[Shape]]:
        config = self.config
        packed = pack(
            running,
            waiting,
            self._pools,
            config.horizon,
            max_bins=dict(config.max_nodes),
            default_wall_time=config.default_wall_time,
        )
        raw = {(p.node_type, p.preemptible): 0 for p in self._pools}
        for pool, count in packed.counts().items():
            raw[(pool.node_type, pool.preemptible)] = count
        targets: dict[tuple[str, bool], int] = {}
        for key, estimate in raw.items():
            previous = self._smoothed.get(key, float(estimate))
            smoothed = config.beta * previous + (1 - config.beta) * estimate
            self._smoothed[key] = smoothed
            # Round half up, but never to 0 while some work needs the pool.
            target = math.floor(smoothed + 0.5)
            targets[key] = max(target, 1) if estimate and not target else target
        for node_type in config.node_types:
            name = node_type.name
            keys = [k for k in targets if k[0] == name]
            total = sum(targets[k] for k in keys)
            low, high = config.min_nodes.get(name, 0), config.max_nodes.get(name, 0)
            if total < low:  # the minimum goes to the first pool (spot when bid)
                targets[keys[0]] += low - total
            while sum(targets[k] for k in keys) > high:
                # Over the maximum (only after smoothing): trim on-demand nodes first.
                for key in sorted(keys, key=lambda k: k[1]):
                    if targets[key]:
                        targets[key] -= 1
                        break
        return targets, packed.waiting_per_pool(), packed.unplaceable

    def _apply(
        self, targets: dict[tuple[str, bool], int], waiting_per_pool: Counter[Pool], waiting: int
    ) -> None:
        waiting_for = {(p.node_type, p.preemptible): n for p, n in waiting_per_pool.items()}
        for node_type in self.config.node_types:
            for preemptible in (True, False) if node_type.preemptible else (False,):
                key = (node_type.name, preemptible)
                active = [
                    t
                    for t in self._nodes.values()
                    if t.pool_key == key and t.state is not NodeState.DRAINING
                ]
                target = targets.get(key, 0)
                if target > len(active):
                    self._scale_up(
                        node_type, preemptible, target - len(active), waiting_for, waiting
                    )
                elif target < len(active):
                    self._scale_down(key, active, len(active) - target)

    def _scale_up(
        self,
        node_type: NodeType,
        preemptible: bool,
        count: int,
        waiting_for: Mapping[tuple[str, bool], int],
        waiting: int,
    ) -> None:
        key = (node_type.name, preemptible)
        draining = [
            t for t in self._nodes.values() if t.pool_key == key and t.state is NodeState.DRAINING
        ]
        for tracked in draining[:count]:
            if tracked.seen_as:
                self.distributor.unignore_node(tracked.seen_as)
            tracked.state = NodeState.JOINED if tracked.seen_as else NodeState.LAUNCHING
            count -= 1
            self._emit(
                f"Kept node {tracked.node.name} ({node_type.name}): work came back "
                "while it drained",
                action="undrain",
                node=tracked.node.name,
            )
        if count <= 0:
            return
        # Never above the type's maximum, whatever the pools' targets say.
        of_type = sum(1 for t in self._nodes.values() if t.node.node_type == node_type.name)
        count = min(count, self.config.max_nodes.get(node_type.name, 0) - of_type)
        if count <= 0:
            return
        kind = "spot" if preemptible else "on-demand"
        tasks = waiting_for.get(key, 0) or waiting
        launched = self._launch(node_type, preemptible, count, key)
        self._emit(
            f"{len(launched)} × {node_type.name} ({kind}) for {tasks} waiting task"
            f"{'s' if tasks != 1 else ''}"
            + (f" (asked for {count})" if len(launched) != count else ""),
            action="scale_up",
            node_type=node_type.name,
            preemptible=preemptible,
            asked=count,
            launched=len(launched),
            waiting=tasks,
            nodes=[n.name for n in launched],
        )
        short = count - len(launched)
        if preemptible and short > 0 and self.config.spot_fallback:
            fallback = self._launch(node_type, False, short, key)
            self._emit(
                f"Spot capacity for {node_type.name} fell {short} short: "
                f"{len(fallback)} × {node_type.name} (on-demand) instead",
                action="spot_fallback",
                node_type=node_type.name,
                asked=short,
                launched=len(fallback),
                nodes=[n.name for n in fallback],
            )

    def _launch(
        self, node_type: NodeType, preemptible: bool, count: int, pool: tuple[str, bool]
    ) -> list[Node]:
        now = self.clock()
        launched: list[Node] = self._call(
            f"launch {count} × {node_type.name}",
            self.provisioner.add_nodes,
            node_type.name,
            count,
            preemptible=preemptible,
            spot_bid=node_type.spot_bid if preemptible else None,
        )
        for node in launched:
            self._nodes[node.name] = _Tracked(node, now, pool=pool)
        return launched

    def _scale_down(self, key: tuple[str, bool], active: list[_Tracked], count: int) -> None:
        # Nodes that never joined go first (nothing runs there), then idle ones, then the
        # least loaded; among equals, the youngest (it has done the least yet).
        def order(tracked: _Tracked) -> tuple[int, float, float]:
            if tracked.state is NodeState.LAUNCHING:
                return (0, 0.0, -tracked.launched)
            name = tracked.seen_as or ""
            busy = self.distributor.node_in_use(name)
            info = self._dist_nodes.get(name)
            load = info.cores_used if info is not None else 0.0
            return (2 if busy else 1, load, -tracked.launched)

        chosen = sorted(active, key=order)[:count]
        unjoined = [t for t in chosen if t.state is NodeState.LAUNCHING]
        self._terminate(unjoined, "no longer needed before they joined", "scale_down")
        drained = [t for t in chosen if t.state is NodeState.JOINED]
        for tracked in drained:
            assert tracked.seen_as is not None
            self.distributor.ignore_node(tracked.seen_as)
            tracked.state = NodeState.DRAINING
        if drained:
            self._emit(
                f"Draining {len(drained)} × {key[0]} ({'spot' if key[1] else 'on-demand'}): "
                f"{', '.join(sorted(t.node.name for t in drained))}",
                action="drain",
                node_type=key[0],
                nodes=sorted(t.node.name for t in drained),
            )
        self._finish_draining()

    def _note_unplaceable(self, unplaceable: Counter[Shape]) -> None:
        shapes = sorted(unplaceable.items(), key=lambda item: -item[1])[:3]
        described = "; ".join(f"{n} × ({shape})" for shape, n in shapes)
        total = sum(unplaceable.values())
        text = f"{total} waiting tasks fit no node that may still be launched: {described}"
        if text != self._last_unplaceable:
            self._last_unplaceable = text
            self._emit(text, action="unplaceable", tasks=sum(unplaceable.values()))
