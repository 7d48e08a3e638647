"""The sequential backend: one task instance at a time, with the multiprocess machinery."""

from __future__ import annotations

from jobfleet.core.hookspecs import hookimpl


@hookimpl
def get_cluster_queue_class() -> type:
    from jobfleet.plugins.multiprocess.queue import MultiprocessQueue

    return MultiprocessQueue


@hookimpl
def get_cluster_distributor_class() -> type:
    from jobfleet.plugins.sequential.distributor import SequentialDistributor

    return SequentialDistributor


@hookimpl
def get_cluster_worker_node_class() -> type:
    from jobfleet.plugins.multiprocess.worker_node import LocalWorkerNode

    return LocalWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.sequential.settings import SequentialSettings

    return SequentialSettings
