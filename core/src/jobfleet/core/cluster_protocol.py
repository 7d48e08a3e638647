"""The three classes every backend provides, with Jobmon's signatures.

Plugins subclass these protocols. Methods marked abstract must be written by the plugin; the
others carry Jobmon's defaults (a concrete `build_worker_node_command`, an array submission that
raises `NotImplementedError` so that a host falls back to single submissions).

`ScalableDistributor` is an optional capability, after Toil's scalable batch systems: a backend
that can tell which nodes it has and stop using some of them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.worker_node_protocol import ClusterWorkerNode as ClusterWorkerNode


class ClusterQueue(Protocol):
    """One queue (partition, namespace, resource pool) of a cluster and its limits."""

    @abstractmethod
    def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
        """Build the queue from its id and name in the host's ledger and its parameters."""

    @abstractmethod
    def validate_resources(self, strict: bool = False, **kwargs: Any) -> tuple[bool, str]:
        """Say whether a request can run here.

        Not strict: values outside the limits are valid, with a message saying how they will be
        coerced. Strict: they are invalid. Values that cannot be read are invalid either way.
        """

    @abstractmethod
    def coerce_resources(self, **kwargs: Any) -> dict[str, Any]:
        """Return the request clamped to the queue's limits, with its defaults filled in."""

    @property
    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """The queue's parameters as given (limits, defaults, backend-specific keys)."""

    @property
    @abstractmethod
    def queue_name(self) -> str:
        """The queue's name, as the backend knows it."""

    @property
    @abstractmethod
    def queue_id(self) -> int:
        """The queue's id in the host's ledger."""

    @property
    @abstractmethod
    def required_resources(self) -> list[str]:
        """The resource names a request must carry (after defaults) to be submitted."""


class ClusterDistributor(Protocol):
    """Submits task instances to a backend, watches them and kills them."""

    @abstractmethod
    def __init__(self, cluster_name: str, *args: Any, **connection_parameters: Any) -> None:
        """Build the distributor for the named cluster; nothing is contacted until `start()`.

        A jobfleet host passes two connection parameters: `host_url=`, the address of the host
        channel the worker nodes report to (`$JOBFLEET_HOST_URL` when absent), and `settings=`,
        the backend's settings object. `BaseClusterDistributor` keeps both. When the channel is
        served over HTTP the host also passes `channel_token=`, which the wrappers need in
        their environment (never on a command line).
        """

    @property
    @abstractmethod
    def worker_node_entry_point(self) -> str:
        """The command that starts the worker-node wrapper on a compute node."""

    @abstractmethod
    def start(self) -> None:
        """Connect to the backend and get ready to submit."""

    @abstractmethod
    def stop(self) -> None:
        """Release everything: no process, pod, task or temporary file is left behind.

        Calling it twice, or before `start()`, is harmless.
        """

    @abstractmethod
    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        """Map the ids that are stuck in the backend's queue to the backend's reason."""

    @abstractmethod
    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        """The subset of `distributor_ids` that is queued or running, from one bulk query.

        An id the backend does not mention is not in the result: it is unknown to the
        backend, never assumed to have succeeded.
        """

    @abstractmethod
    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        """Kill these instances, queued or running; unknown ids are ignored."""

    @abstractmethod
    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        """Submit one task instance and return its distributor id.

        `command` holds the worker-node arguments only; the plugin puts
        `worker_node_entry_point` in front of it.
        """

    def submit_array_to_batch_distributor(
        self,
        command: str,
        name: str,
        requested_resources: dict[str, Any],
        array_length: int,
    ) -> dict[int, str]:
        """Submit `array_length` instances at once and map each step (0..n-1) to its id.

        Backends without arrays keep this default; a host then submits one by one.
        """
        raise NotImplementedError(f"{type(self).__name__} does not submit arrays")

    @abstractmethod
    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        """Tell how an instance ended, from the backend's side. Never raises.

        Returns `U` with a message when it cannot tell, and `finalized=False` while the
        backend's accounting may still change its answer.
        """

    def build_worker_node_command(
        self,
        task_instance_id: int | None = None,
        array_id: int | None = None,
        batch_number: int | None = None,
    ) -> str:
        """The worker-node arguments for one instance or for one array batch."""
        if task_instance_id is not None:
            return f"job --task-instance-id {int(task_instance_id)}"
        if array_id is not None and batch_number is not None:
            return f"array --array-id {int(array_id)} --batch-number {int(batch_number)}"
        raise ValueError(
            "build_worker_node_command needs task_instance_id, or both array_id and batch_number"
        )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Load of one node, as a `ScalableDistributor` reports it (memory in bytes)."""

    cores_used: float
    memory_used: int
    cores_total: float
    memory_total: int
    requested_cores: float = 0.0
    requested_memory: int = 0
    workers: int = 0
    last_seen: float | None = None
    """When the backend last heard of the node (seconds since the epoch), if it tracks that."""
    preemptible: bool | None = None
    """Whether the node is preemptible (spot) capacity; None when the backend cannot tell."""


@runtime_checkable
class ScalableDistributor(Protocol):
    """Optional: a distributor whose nodes a host or autoscaler can inspect and drain."""

    def get_nodes(self) -> dict[str, NodeInfo]:
        """Every node the backend may use, with its current load."""
        ...

    def node_in_use(self, node: str) -> bool:
        """Whether any task instance of ours is on `node`."""
        ...

    def ignore_node(self, node: str) -> None:
        """Stop placing new task instances on `node` (running ones go on)."""
        ...

    def unignore_node(self, node: str) -> None:
        """Undo `ignore_node`."""
        ...


# How each protocol is called, so that a plugin's classes can be checked at load time without
# being instantiated. Each entry: member name -> (positional args, keyword args) after `self`,
# or None for an attribute that only has to exist.
_CallShape = tuple[tuple[Any, ...], dict[str, Any]] | None

_SHAPES: Mapping[type, Mapping[str, _CallShape]] = {
    ClusterQueue: {
        "__init__": ((1, "queue", {}), {}),
        "validate_resources": ((), {"strict": True, "cores": 1, "memory": "1G"}),
        "coerce_resources": ((), {"cores": 1, "memory": "1G"}),
        "parameters": None,
        "queue_name": None,
        "queue_id": None,
        "required_resources": None,
    },
    ClusterDistributor: {
        "__init__": (("cluster",), {}),
        "worker_node_entry_point": None,
        "start": ((), {}),
        "stop": ((), {}),
        "get_queueing_errors": ((["1"],), {}),
        "get_submitted_or_running": ((["1"],), {}),
        "terminate_task_instances": ((["1"],), {}),
        "submit_to_batch_distributor": (("job --task-instance-id 1", "name", {}), {}),
        "submit_array_to_batch_distributor": (("array", "name", {}, 2), {}),
        "get_remote_exit_info": (("1",), {}),
        "build_worker_node_command": ((), {"task_instance_id": 1}),
    },
    ClusterWorkerNode: {
        "__init__": ((), {}),
        "distributor_id": None,
        "array_step_id": None,
        "get_usage_stats": ((), {}),
        "get_exit_info": ((0, ""), {}),
        "initialize_logfile": (("stdout", "/tmp", "name"), {}),  # noqa: S108 - never opened
    },
}


def protocol_problems(cls: object, protocol: type) -> list[str]:
    """What keeps `cls` from serving as `protocol`; an empty list means it fits.

    Checks that it is a class, that no abstract member is left unwritten, that every member
    exists, and that every method accepts the arguments the protocol calls it with.
    """
    expected = protocol.__name__
    if not isinstance(cls, type):
        return [f"expected a class implementing {expected}, got {cls!r}"]
    problems: list[str] = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        problems.append(f"{cls.__name__} leaves abstract members unwritten: {', '.join(abstract)}")
    for member, shape in _SHAPES[protocol].items():
        if not hasattr(cls, member):
            problems.append(f"{cls.__name__} has no member {member!r} required by {expected}")
        elif shape is not None:
            problem = _signature_problem(cls, member, shape)
            if problem:
                problems.append(problem)
    return problems


def _signature_problem(
    cls: type, member: str, shape: tuple[tuple[Any, ...], dict[str, Any]]
) -> str:
    import inspect  # only when checking plugins, not on every worker-node start

    method = getattr(cls, member)
    if not callable(method):
        return f"{cls.__name__}.{member} is not a method"
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return ""  # builtins without a signature cannot be checked; let them through
    args, kwargs = shape
    # Through the class, a plain method still wants its `self`; a static method (as Jobmon's
    # sequential and dummy worker nodes have) wants none, and a class method has its class.
    raw = inspect.getattr_static(cls, member, None)
    receiver = () if isinstance(raw, staticmethod | classmethod) else (None,)
    try:
        signature.bind(*receiver, *args, **kwargs)
    except TypeError as exc:
        return f"{cls.__name__}.{member}{signature} does not accept the protocol's call: {exc}"
    return ""
