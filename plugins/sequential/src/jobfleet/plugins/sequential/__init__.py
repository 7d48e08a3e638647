"""The sequential backend: one task instance at a time, on the local-process base in the core."""

from __future__ import annotations

from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode
from jobfleet.core.hookspecs import hookimpl


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.core.local.queue import LocalQueue

    return LocalQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.sequential.distributor import SequentialDistributor

    return SequentialDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.core.local.worker_node import LocalWorkerNode

    return LocalWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.sequential.settings import SequentialSettings

    return SequentialSettings
