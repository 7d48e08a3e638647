"""The dummy backend: accepts every request, runs nothing, reports each instance done at once.

It exists to measure a host's dispatch overhead and to exercise hosts (retries through
`fail_every`, running time through `report_delay`). Registered through its entry point like any
other backend; the hook functions below are all a plugin module needs.
"""

from __future__ import annotations

# Light on purpose: this runs before the worker-node class the wrapper imports at every task
# start (the `jobfleet.worker_nodes` entry point), so neither pluggy nor the protocols.
from jobfleet.core.hook_marker import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.plugins.dummy.queue import DummyQueue

    return DummyQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.dummy.distributor import DummyDistributor

    return DummyDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.plugins.dummy.worker_node import DummyWorkerNode

    return DummyWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.dummy.settings import DummySettings

    return DummySettings
