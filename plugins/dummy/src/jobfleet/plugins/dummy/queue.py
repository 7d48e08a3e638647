"""The dummy queue: the shared base queue, with no limits unless its parameters set some."""

from __future__ import annotations

from jobfleet.core.queue import BaseClusterQueue


class DummyQueue(BaseClusterQueue):
    """Accepts every readable request; limits in the queue parameters are honoured."""
