"""The Mesos backend: a framework on pymesos, offers packed with tasks, an executor per agent."""

from __future__ import annotations

# Light on purpose: this runs before the worker-node class the wrapper imports at every task
# start (the `jobfleet.worker_nodes` entry point), so neither pluggy nor the protocols.
from jobfleet.core.hook_marker import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.plugins.mesos.queue import MesosQueue

    return MesosQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.mesos.distributor import MesosDistributor

    return MesosDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.plugins.mesos.worker_node import MesosWorkerNode

    return MesosWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.mesos.settings import MesosSettings

    return MesosSettings
