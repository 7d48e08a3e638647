"""The worker node of the local backends: the shared base with jobfleet's own variables."""

from __future__ import annotations

from jobfleet.core.base_worker_node import BaseClusterWorkerNode


class LocalWorkerNode(BaseClusterWorkerNode):
    """Reads `JOBFLEET_DISTRIBUTOR_ID` and `JOBFLEET_ARRAY_STEP_ID`, which the local
    distributors set for every wrapper they start."""
