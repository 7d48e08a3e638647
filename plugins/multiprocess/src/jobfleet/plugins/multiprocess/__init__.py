"""The multiprocess backend: task instances as local processes, within a resource pool."""

from __future__ import annotations

# Light on purpose: this runs before the worker-node class the wrapper imports at every task
# start (the `jobfleet.worker_nodes` entry point), so neither pluggy nor the protocols.
from jobfleet.core.hook_marker import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.core.local.queue import LocalQueue

    return LocalQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor

    return MultiprocessDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.core.local.worker_node import LocalWorkerNode

    return LocalWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

    return MultiprocessSettings
