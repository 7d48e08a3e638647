"""The Mesos worker node: who the task is, from the variables jobfleet's executor sets."""

from __future__ import annotations

from typing import ClassVar

from jobfleet.core.base_worker_node import BaseClusterWorkerNode

# Set by jobfleet's executor (executor.py) in the wrapper's environment: the Mesos task id (the
# distributor id), and an array step's 0-based index (the wrapper's array mode reads it).
TASK_VARIABLE = "JOBFLEET_MESOS_TASK_ID"
STEP_VARIABLE = "JOBFLEET_MESOS_ARRAY_STEP"


class MesosWorkerNode(BaseClusterWorkerNode):
    """`jf-RUN-RANDOM` for a task, `jf-RUN-RANDOM_STEP` for step STEP of an array."""

    distributor_id_variables: ClassVar[tuple[str, ...]] = (TASK_VARIABLE,)
    array_step_variables: ClassVar[tuple[str, ...]] = (STEP_VARIABLE,)
