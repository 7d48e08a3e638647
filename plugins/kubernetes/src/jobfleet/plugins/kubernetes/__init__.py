"""The Kubernetes backend: a batch/v1 Job per task, an Indexed Job per array, one watch stream."""

from __future__ import annotations

from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode
from jobfleet.core.hookspecs import hookimpl


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
