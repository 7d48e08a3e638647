"""The Kubernetes queue: limits a namespace's tasks must fit (from `jobfleet queues add`)."""

from __future__ import annotations

from jobfleet.core.queue import BaseClusterQueue


class KubernetesQueue(BaseClusterQueue):
    """A set of limits (max_cores, max_memory, max_runtime, max_gpus per task) and defaults;
    Kubernetes has no partitions, so the queue's name only groups tasks on the host's side."""
