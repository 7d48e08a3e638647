"""The dummy worker node: the shared base, reading `JOBFLEET_DISTRIBUTOR_ID` and
`JOBFLEET_ARRAY_STEP_ID` (the names the local backends also set)."""

from __future__ import annotations

from jobfleet.core.base_worker_node import BaseClusterWorkerNode


class DummyWorkerNode(BaseClusterWorkerNode):
    """Nothing to add: the dummy backend sets no variables of its own."""
