"""An in-memory provisioner and a scalable distributor to go with it, for tests and benchmarks.

`FakeProvisioner` launches nothing: its nodes are records, with a clock (virtual or real), a
limit on spot capacity, and errors to inject. `FakeScalableDistributor` lists a provisioner's
nodes once they have booted (`boot_time` after launch) and lets a test mark nodes busy. Neither
runs a task: they exist to drive `jobfleet.core.scaling.ClusterScaler`, never for real work.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from jobfleet.core.cluster_protocol import NodeInfo
from jobfleet.core.resources import GIB
from jobfleet.core.scaling import ManagedNodesNotSupported, Node, NodeType, Shape

__all__ = ["FAKE_NODE_SHAPES", "FakeProvisioner", "FakeScalableDistributor", "Throttled"]

FAKE_NODE_SHAPES: Mapping[str, tuple[float, int]] = {
    "small": (2, 4 * GIB),
    "medium": (4, 16 * GIB),
    "large": (16, 64 * GIB),
}
"""cores and memory of each fake node type."""


class Throttled(Exception):
    """What the fake provider raises when told to throttle (the retryable kind)."""


class FakeProvisioner:
    """Nodes as records. `spot_capacity` caps live preemptible nodes (None: no cap)."""

    def __init__(
        self,
        cluster_name: str,
        *,
        settings: Any = None,
        clock: Callable[[], float] | None = None,
        spot_capacity: int | None = None,
        wall_time: float = math.inf,
        shapes: Mapping[str, tuple[float, int]] | None = None,
        **parameters: Any,
    ) -> None:
        self.cluster_name = cluster_name
        self.settings = settings
        self.parameters = parameters
        self.node_types: list[NodeType] = []
        self.clock = clock or (lambda: 0.0)
        self.spot_capacity = spot_capacity
        self.wall_time = wall_time
        self.shapes = dict(shapes or FAKE_NODE_SHAPES)
        self.live: dict[str, Node] = {}
        self.launched_at: dict[str, float] = {}
        self.fail_next: list[BaseException] = []
        """Errors the next calls raise, one each, before doing anything."""
        self.calls: list[tuple[str, Any]] = []
        self.node_seconds = 0.0
        """Seconds of node time of every node terminated so far."""
        self._ids = itertools.count(1)

    def _maybe_fail(self, call: str, argument: Any = None) -> None:
        self.calls.append((call, argument))
        if self.fail_next:
            raise self.fail_next.pop(0)

    def add_nodes(
        self,
        node_type: str,
        count: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        self._maybe_fail("add_nodes", (node_type, count, preemptible))
        if node_type not in self.shapes:
            raise ValueError(f"unknown node type {node_type!r}")
        if preemptible and self.spot_capacity is not None:
            spot_live = sum(1 for n in self.live.values() if n.preemptible)
            count = max(0, min(count, self.spot_capacity - spot_live))
        added = []
        for _ in range(count):
            name = f"{self.cluster_name}-{node_type}-{next(self._ids)}"
            node = Node(
                name,
                node_type,
                preemptible,
                private_ip=None,
                launched_at=datetime.now(UTC),
                tags={"cluster": self.cluster_name, "node-type": node_type},
            )
            self.live[name] = node
            self.launched_at[name] = self.clock()
            added.append(node)
        return added

    def add_managed_nodes(
        self,
        node_type: str,
        min_nodes: int,
        max_nodes: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> None:
        raise ManagedNodesNotSupported("The fake provisioner has no self-scaling node groups.")

    def terminate_nodes(self, nodes: Sequence[Node]) -> None:
        self._maybe_fail("terminate_nodes", [n.name for n in nodes])
        for node in nodes:
            if self.live.pop(node.name, None) is not None:
                self.node_seconds += self.clock() - self.launched_at.pop(node.name)

    def get_provisioned_workers(
        self, node_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        self._maybe_fail("get_provisioned_workers")
        return [
            node
            for node in self.live.values()
            if (node_type is None or node.node_type == node_type)
            and (preemptible is None or node.preemptible == preemptible)
        ]

    def get_node_shape(self, node_type: str, preemptible: bool = False) -> Shape:
        cores, memory = self.shapes[node_type]
        return Shape(self.wall_time, memory, cores, 100 * GIB, preemptible)

    def retry_predicate(self, error: BaseException) -> bool:
        return isinstance(error, Throttled)

    def destroy_cluster(self) -> None:
        self.terminate_nodes(list(self.live.values()))

    def preempt(self, name: str) -> None:
        """The provider takes a spot node back."""
        self.terminate_nodes([self.live[name]])


class FakeScalableDistributor:
    """Lists the provisioner's nodes `boot_time` after launch; `busy` says which are in use."""

    def __init__(
        self,
        provisioner: FakeProvisioner,
        *,
        boot_time: float = 0.0,
        never_join: Sequence[str] = (),
    ) -> None:
        self.provisioner = provisioner
        self.boot_time = boot_time
        self.never_join = set(never_join)
        self.busy: dict[str, float] = {}
        """Cores in use on each node (absent or 0: idle)."""
        self.ignored: set[str] = set()

    def get_nodes(self) -> dict[str, NodeInfo]:
        now = self.provisioner.clock()
        found = {}
        for name, node in self.provisioner.live.items():
            if name in self.never_join:
                continue
            if now - self.provisioner.launched_at[name] < self.boot_time:
                continue
            cores, memory = self.provisioner.shapes[node.node_type]
            found[name] = NodeInfo(
                cores_used=self.busy.get(name, 0.0),
                memory_used=0,
                cores_total=cores,
                memory_total=memory,
                preemptible=node.preemptible,
            )
        return found

    def node_in_use(self, node: str) -> bool:
        return self.busy.get(node, 0.0) > 0

    def ignore_node(self, node: str) -> None:
        self.ignored.add(node)

    def unignore_node(self, node: str) -> None:
        self.ignored.discard(node)
