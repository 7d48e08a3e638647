"""The Kubernetes worker node: who the task is, from the variables its pod spec sets."""

from __future__ import annotations

import os
from typing import ClassVar

from jobfleet.core.base_worker_node import BaseClusterWorkerNode

# Set by the pod spec (see manifests.py): the Job's name as a literal value (under its own name
# for an array's Indexed Job), the pod's name through a fieldRef; Kubernetes itself sets
# JOB_COMPLETION_INDEX in an Indexed Job's pods.
JOB_VARIABLE = "JOBFLEET_KUBERNETES_JOB"
ARRAY_JOB_VARIABLE = "JOBFLEET_KUBERNETES_ARRAY_JOB"
POD_VARIABLE = "JOBFLEET_KUBERNETES_POD"
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"


class KubernetesWorkerNode(BaseClusterWorkerNode):
    """`JOB` for a task's Job, `JOB_INDEX` for step INDEX of an array's Indexed Job: the ids
    the distributor hands out (an underscore never occurs in a Job's DNS name)."""

    distributor_id_variables: ClassVar[tuple[str, ...]] = (JOB_VARIABLE,)
    array_step_variables: ClassVar[tuple[str, ...]] = (INDEX_VARIABLE,)

    @property
    def distributor_id(self) -> str | None:
        array_job = os.environ.get(ARRAY_JOB_VARIABLE)
        step = self.array_step_id
        if array_job and step is not None:
            return f"{array_job}_{step}"
        return os.environ.get(JOB_VARIABLE) or None

    @property
    def pod_name(self) -> str | None:
        """The pod this task runs in (for people: `kubectl logs`, `kubectl describe`)."""
        return os.environ.get(POD_VARIABLE) or None
