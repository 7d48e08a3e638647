"""The multiprocess backend: task instances as local processes, within a resource pool."""

from __future__ import annotations

from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode
from jobfleet.core.hookspecs import hookimpl


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
