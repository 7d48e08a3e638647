"""The Slurm backend: sbatch with script files, arrays, one squeue (and sacct) per round."""

from __future__ import annotations

# Light on purpose: this runs before the worker-node class the wrapper imports at every task
# start (the `jobfleet.worker_nodes` entry point), so neither pluggy nor the protocols.
from jobfleet.core.hook_marker import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode


@hookimpl
def get_cluster_queue_class() -> type[ClusterQueue]:
    from jobfleet.plugins.slurm.queue import SlurmQueue

    return SlurmQueue


@hookimpl
def get_cluster_distributor_class() -> type[ClusterDistributor]:
    from jobfleet.plugins.slurm.distributor import SlurmDistributor

    return SlurmDistributor


@hookimpl
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:
    from jobfleet.plugins.slurm.worker_node import SlurmWorkerNode

    return SlurmWorkerNode


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.slurm.settings import SlurmSettings

    return SlurmSettings


@hookimpl
def get_cluster_queues(settings: object) -> dict[str, dict[str, object]]:
    """The cluster's partitions, read with scontrol and sinfo."""
    from jobfleet.plugins.slurm.commands import SlurmCommands
    from jobfleet.plugins.slurm.partitions import read_queues

    timeout = getattr(settings, "command_timeout", 30.0)
    return dict(read_queues(SlurmCommands(timeout)))
