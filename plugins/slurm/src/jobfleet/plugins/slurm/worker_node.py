"""The Slurm worker node: who the task is, from the variables Slurm sets in the job."""

from __future__ import annotations

import os

from jobfleet.core.base_worker_node import BaseClusterWorkerNode

# A big array is submitted in chunks (no index may reach MaxArraySize): each chunk's first
# jobfleet step, added to SLURM_ARRAY_TASK_ID, gives the step.
OFFSET_VARIABLE = "JOBFLEET_ARRAY_OFFSET"


class SlurmWorkerNode(BaseClusterWorkerNode):
    """`123` for a job, `123_4` for task 4 of array job 123 (as squeue and sacct name them)."""

    @property
    def distributor_id(self) -> str | None:
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if array_job and task:
            return f"{array_job}_{task}"
        return os.environ.get("SLURM_JOB_ID") or None

    @property
    def array_step_id(self) -> int | None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        offset = os.environ.get(OFFSET_VARIABLE, "0") or "0"
        if not (task.isascii() and task.isdigit() and offset.isascii() and offset.isdigit()):
            return None
        return int(offset) + int(task)
