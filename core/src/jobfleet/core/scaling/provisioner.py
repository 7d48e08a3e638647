"""The provisioner protocol: what adds and removes a cluster's worker nodes.

A provisioner launches nodes of named types (EC2 instances, extra `slurmd` daemons, …), lists
them, tells their shape and terminates them. The cluster scaler (`jobfleet.core.scaling.scaler`)
decides how many; the backend's `ScalableDistributor` says which nodes have joined and which are
busy. Provisioners are plugins: a module in the entry-point group `jobfleet.plugins` whose
optional hook `get_provisioner_class()` returns a class fitting `Provisioner`
(see docs/hooks.md and docs/scaling.md); `jobfleet.core.testing.ProvisionerTests` checks one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from jobfleet.core.errors import JobfleetError
from jobfleet.core.scaling.node_types import NodeType
from jobfleet.core.scaling.shape import Shape

__all__ = [
    "NODE_NAME_TAG",
    "ManagedNodesNotSupported",
    "Node",
    "Provisioner",
    "ProvisionerError",
    "provisioner_problems",
]

NODE_NAME_TAG = "jobfleet:node-name"
"""The tag under which a provisioner may record the name the backend will know a node by
(a host name), when that is neither the node's `name` nor one of its IP addresses."""


class ProvisionerError(JobfleetError):
    """A provisioner could not do what was asked (and retrying will not help)."""


class ManagedNodesNotSupported(ProvisionerError):
    """The provisioner (or its cluster's configuration) cannot have self-scaling node groups.

    Calling `add_managed_nodes` and catching this is the way to find out.
    """


@dataclass
class Node:
    """One worker node a provisioner launched."""

    name: str
    """The provisioner's id for the node (an instance id, a slurmd node name)."""
    node_type: str
    preemptible: bool
    private_ip: str | None = None
    public_ip: str | None = None
    launched_at: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def known_names(self) -> frozenset[str]:
        """Every name a backend may list this node under in `ScalableDistributor.get_nodes`:
        its `name`, its IP addresses and the `NODE_NAME_TAG` tag."""
        names = {self.name, self.private_ip, self.public_ip, self.tags.get(NODE_NAME_TAG)}
        return frozenset(name for name in names if name)


@runtime_checkable
class Provisioner(Protocol):
    """Adds and removes the worker nodes of one cluster.

    Built as `Provisioner(cluster_name, settings=<settings or None>, **parameters)`. Every node
    it launches is marked as belonging to `cluster_name` (a tag, a name prefix), and every
    listing is limited to that cluster's nodes. The host assigns `node_types` (the types the
    scaler manages, parsed from `--node-types`) after construction.

    Methods may raise whatever their client raises; the scaler asks `retry_predicate` whether
    an error is worth retrying (throttling, a transient network error) and otherwise records it.
    """

    node_types: list[NodeType]

    @abstractmethod
    def __init__(self, cluster_name: str, *, settings: Any = None, **parameters: Any) -> None:
        """Connect to the provider (lazily if that is slow); launch nothing."""

    @abstractmethod
    def add_nodes(
        self,
        node_type: str,
        count: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        """Launch up to `count` nodes of `node_type`; return those actually launched.

        Returning fewer than asked is how a provisioner says capacity (spot capacity in
        particular) could not be had; the scaler then falls back to on-demand nodes.
        """

    @abstractmethod
    def add_managed_nodes(
        self,
        node_type: str,
        min_nodes: int,
        max_nodes: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> None:
        """Create a group of nodes that scales itself between `min_nodes` and `max_nodes`.

        Raises `ManagedNodesNotSupported` when the provisioner cannot.
        """

    @abstractmethod
    def terminate_nodes(self, nodes: Sequence[Node]) -> None:
        """Terminate these nodes. Nodes already gone are not an error."""

    @abstractmethod
    def get_provisioned_workers(
        self, node_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        """Every live worker node of this cluster (launching or running), optionally only
        of one type or one kind of capacity."""

    @abstractmethod
    def get_node_shape(self, node_type: str, preemptible: bool = False) -> Shape:
        """What one node of `node_type` offers. Its `wall_time` is the allocation slice
        (3600 for hourly billing, `math.inf` for none); see `Shape`."""

    @abstractmethod
    def retry_predicate(self, error: BaseException) -> bool:
        """Whether the scaler should retry after `error` (API throttling, a transient fault)."""

    @abstractmethod
    def destroy_cluster(self) -> None:
        """Terminate every node of this cluster and release what the provisioner created."""


# How `provisioner_problems` calls each member (after `self`), as in `cluster_protocol`.
_PROVISIONER_SHAPE: Mapping[str, tuple[tuple[Any, ...], dict[str, Any]] | None] = {
    "__init__": (("cluster",), {"settings": None}),
    "add_nodes": (("type", 1), {"preemptible": False, "spot_bid": None}),
    "add_managed_nodes": (("type", 0, 1), {"preemptible": False, "spot_bid": None}),
    "terminate_nodes": (([],), {}),
    "get_provisioned_workers": ((), {"node_type": None, "preemptible": None}),
    "get_node_shape": (("type",), {"preemptible": False}),
    "retry_predicate": ((Exception(),), {}),
    "destroy_cluster": ((), {}),
}


def provisioner_problems(cls: object) -> list[str]:
    """What keeps `cls` from serving as a `Provisioner`; an empty list means it fits."""
    from jobfleet.core.cluster_protocol import _signature_problem

    if not isinstance(cls, type):
        return [f"expected a class implementing Provisioner, got {cls!r}"]
    problems: list[str] = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        problems.append(f"{cls.__name__} leaves abstract members unwritten: {', '.join(abstract)}")
    for member, call in _PROVISIONER_SHAPE.items():
        if not hasattr(cls, member):
            problems.append(f"{cls.__name__} has no member {member!r} required by Provisioner")
        elif call is not None:
            problem = _signature_problem(cls, member, call)
            if problem:
                problems.append(problem)
    return problems
