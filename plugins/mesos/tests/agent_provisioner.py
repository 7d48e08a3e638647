"""A provisioner whose nodes are agents of the loopback Mesos emulator (test only).

`add_nodes` calls `mc.add_agent(hostname=…, cpus=…, mem=…, attributes=…)` and `terminate_nodes`
`mc.remove_agent(…)`: the agent's hostname is the node's name (so the Mesos distributor's
`get_nodes` lists it under that name and the scaler sees it join), and its attributes say whose
it is (`jobfleet_cluster`), its type (`jobfleet_node_type`) and, for spot nodes, the Mesos
plugin's default preemptible marker (`preemptible=true`). Nothing is kept in the provisioner
itself: every listing reads the emulator's live agents, as a cloud provisioner reads its
provider, so two instances of one cluster agree and two clusters never see each other's nodes.

The emulator lives in the test process, so the host must too: `bound_provisioner_class(mc)`
makes a subclass bound to one emulator, which a test registers as a plugin in-process
(`provisioner_plugin_module`) and names with `jobfleet run --provisioner`. `hooks` lets a test
act at a precise point of the scaler's sequence (before a termination, …). Not product code:
a real cluster's nodes are machines.
"""

from __future__ import annotations

import itertools
import math
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from jobfleet.core.resources import MIB
from jobfleet.core.scaling import NODE_NAME_TAG, ManagedNodesNotSupported, Node, NodeType, Shape

CLUSTER_ATTRIBUTE = "jobfleet_cluster"
TYPE_ATTRIBUTE = "jobfleet_node_type"
SPOT_ATTRIBUTE = ("preemptible", "true")  # the Mesos plugin's default preemptible_attribute


@dataclass(frozen=True)
class AgentType:
    """What one agent of a node type offers (Mesos units: cpus, MB)."""

    cpus: float
    mem: float
    disk: float = 10000.0


DEFAULT_TYPES: Mapping[str, AgentType] = {
    "c2": AgentType(cpus=2, mem=4096),
    "c4": AgentType(cpus=4, mem=8192),
}


class Throttled(Exception):
    """What the emulated provider raises when a test tells it to throttle (retryable)."""


@dataclass
class Hooks:
    """Callables a test sets to act inside the scaler's sequence; each gets the provisioner and
    the nodes of the call."""

    before_add: list[Callable[[Any, str, int], None]] = field(default_factory=list)
    before_terminate: list[Callable[[Any, Sequence[Node]], None]] = field(default_factory=list)
    after_terminate: list[Callable[[Any, Sequence[Node]], None]] = field(default_factory=list)
    fail_next: list[BaseException] = field(default_factory=list)
    """Errors the next calls raise, one each, before doing anything."""


class LocalAgentProvisioner:
    """Nodes as Mesos emulator agents. Built as `LocalAgentProvisioner(cluster_name,
    emulator=mc)`, or through a class from `bound_provisioner_class(mc)`."""

    emulator: ClassVar[Any] = None
    agent_types: ClassVar[Mapping[str, AgentType]] = DEFAULT_TYPES
    spot_capacity: ClassVar[int | None] = None
    """Most live spot nodes of a cluster (None: no limit): fewer are returned beyond it."""
    hooks: ClassVar[Hooks] = Hooks()
    instances: ClassVar[list[LocalAgentProvisioner]] = []
    _counter: ClassVar[itertools.count[int]] = itertools.count(1)
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        cluster_name: str,
        *,
        settings: Any = None,
        emulator: Any = None,
        **parameters: Any,
    ) -> None:
        self.cluster_name = cluster_name
        self.settings = settings
        self.parameters = parameters
        self.mc = emulator if emulator is not None else type(self).emulator
        if self.mc is None:
            raise ValueError("LocalAgentProvisioner needs a Mesos emulator (emulator=mc)")
        self.node_types: list[NodeType] = []
        self.calls: list[tuple[str, Any]] = []
        type(self).instances.append(self)

    def _called(self, call: str, argument: Any = None) -> None:
        self.calls.append((call, argument))
        if self.hooks.fail_next:
            raise self.hooks.fail_next.pop(0)

    # -- the protocol -----------------------------------------------------------------------

    def add_nodes(
        self,
        node_type: str,
        count: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        self._called("add_nodes", (node_type, count, preemptible))
        agent_type = self.agent_types.get(node_type)
        if agent_type is None:
            raise ValueError(
                f"unknown node type {node_type!r}; known: {', '.join(self.agent_types)}"
            )
        if preemptible and self.spot_capacity is not None:
            live = len(self.get_provisioned_workers(preemptible=True))
            count = max(0, min(count, self.spot_capacity - live))
        for hook in self.hooks.before_add:
            hook(self, node_type, count)
        added = []
        for _ in range(count):
            with self._lock:
                number = next(self._counter)
            hostname = f"{self.cluster_name}-{node_type}-{number}"
            attributes: dict[str, str | float] = {
                CLUSTER_ATTRIBUTE: self.cluster_name,
                TYPE_ATTRIBUTE: node_type,
            }
            if preemptible:
                attributes[SPOT_ATTRIBUTE[0]] = SPOT_ATTRIBUTE[1]
            self.mc.add_agent(
                hostname=hostname,
                cpus=agent_type.cpus,
                mem=agent_type.mem,
                disk=agent_type.disk,
                attributes=attributes,
            )
            added.append(self._node(hostname, node_type, preemptible))
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
        raise ManagedNodesNotSupported(
            "Mesos emulator agents are added one by one; there are no self-scaling groups."
        )

    def terminate_nodes(self, nodes: Sequence[Node]) -> None:
        self._called("terminate_nodes", [n.name for n in nodes])
        for hook in self.hooks.before_terminate:
            hook(self, nodes)
        mine = {n.name for n in self.get_provisioned_workers()}
        for node in nodes:
            if node.name in mine:  # gone already, or another cluster's: nothing to do
                self.mc.remove_agent(node.name)
        for hook in self.hooks.after_terminate:
            hook(self, nodes)

    def get_provisioned_workers(
        self, node_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        self._called("get_provisioned_workers")
        found = []
        for agent in self.mc.agents().values():
            attributes = agent["attributes"]
            if not agent["active"] or attributes.get(CLUSTER_ATTRIBUTE) != self.cluster_name:
                continue
            spot = attributes.get(SPOT_ATTRIBUTE[0]) == SPOT_ATTRIBUTE[1]
            kind = str(attributes.get(TYPE_ATTRIBUTE))
            if node_type is not None and kind != node_type:
                continue
            if preemptible is not None and spot != preemptible:
                continue
            found.append(self._node(agent["hostname"], kind, spot))
        return sorted(found, key=lambda node: node.name)

    def get_node_shape(self, node_type: str, preemptible: bool = False) -> Shape:
        agent_type = self.agent_types[node_type]
        return Shape(
            wall_time=math.inf,  # a local agent is not billed by the hour
            memory=int(agent_type.mem * MIB),
            cores=float(agent_type.cpus),
            disk=int(agent_type.disk * MIB),
            preemptible=preemptible,
        )

    def retry_predicate(self, error: BaseException) -> bool:
        return isinstance(error, Throttled)

    def destroy_cluster(self) -> None:
        self.terminate_nodes(self.get_provisioned_workers())

    # -- helpers ----------------------------------------------------------------------------

    def _node(self, hostname: str, node_type: str, preemptible: bool) -> Node:
        return Node(
            name=hostname,
            node_type=node_type,
            preemptible=preemptible,
            private_ip=None,  # every agent is on loopback: its IP names no one node
            launched_at=datetime.now(UTC),
            tags={
                "cluster": self.cluster_name,
                "node-type": node_type,
                NODE_NAME_TAG: hostname,
            },
        )


def bound_provisioner_class(
    mc: Any,
    *,
    agent_types: Mapping[str, AgentType] | None = None,
    spot_capacity: int | None = None,
) -> type[LocalAgentProvisioner]:
    """A subclass bound to one emulator, with its own hooks and record of instances, for the
    host to build as `Class(cluster_name, settings=…)`."""
    return type(
        "BoundLocalAgentProvisioner",
        (LocalAgentProvisioner,),
        {
            "emulator": mc,
            "agent_types": dict(agent_types or DEFAULT_TYPES),
            "spot_capacity": spot_capacity,
            "hooks": Hooks(),
            "instances": [],
        },
    )


def provisioner_plugin_module(cls: type[LocalAgentProvisioner]) -> types.ModuleType:
    """A plugin module providing only a provisioner (`get_provisioner_class`), for a
    `PluginRegistry` built in-process."""
    module = types.ModuleType("local_mesos_agents")
    module.get_provisioner_class = lambda: cls  # type: ignore[attr-defined]
    return module
