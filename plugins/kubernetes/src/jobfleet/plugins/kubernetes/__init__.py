"""The Kubernetes backend: a batch/v1 Job per task, an Indexed Job per array, one watch stream."""

from __future__ import annotations

# Light on purpose: this runs before the worker-node class the wrapper imports at every task
# start (the `jobfleet.worker_nodes` entry point), so neither pluggy nor the protocols.
from jobfleet.core.hook_marker import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.plugins.kubernetes.queue import KubernetesQueue

    return KubernetesQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.kubernetes.distributor import KubernetesDistributor

    return KubernetesDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.plugins.kubernetes.worker_node import KubernetesWorkerNode

    return KubernetesWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.kubernetes.settings import KubernetesSettings

    return KubernetesSettings
