"""The Mesos queue: limits a role's tasks must fit (from `jobfleet queues add`)."""

from __future__ import annotations

from jobfleet.core.queue import BaseClusterQueue


class MesosQueue(BaseClusterQueue):
    """A set of limits (max_cores, max_memory, max_runtime, max_gpus per task) and defaults;
    the framework's role decides its share of the cluster, so the queue only groups tasks on
    the host's side."""
