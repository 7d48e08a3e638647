"""The Slurm queue: a partition, with the limits `jobfleet queues sync` reads from it."""

from __future__ import annotations

from jobfleet.core.queue import BaseClusterQueue


class SlurmQueue(BaseClusterQueue):
    """A partition. Its limits (max_cores per node, max_memory per node, max_runtime,
    max_gpus) come from the queue's parameters, as `jobfleet queues sync --cluster slurm`
    writes them; the queue's name is the partition's."""
