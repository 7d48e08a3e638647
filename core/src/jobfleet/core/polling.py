"""How often a remote backend may ask its scheduler how its jobs are doing.

A host calls `get_submitted_or_running` every round, but a scheduler's status command (squeue,
a Kubernetes list, a Mesos reconciliation) is shared by every user of the cluster. `Poller`
answers "may I ask again now?": after a change it asks again soon (`min_interval`), while
nothing changes it backs off, doubling up to `max_interval`, and whatever the interval says,
it never asks more than `max_per_minute` times in any 60 seconds (the hard limit a cluster's
administrators can be promised). Backends answer from their last snapshot in between.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["Poller"]

_WINDOW = 60.0


class Poller:
    """An adaptive interval under a hard rate limit, for one backend's status queries.

    Not thread-safe: a distributor's status calls come from the host's one service loop.
    """

    def __init__(
        self,
        min_interval: float,
        max_interval: float,
        max_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError(
                f"min_interval must be positive and at most max_interval, not {min_interval} "
                f"and {max_interval}"
            )
        if max_per_minute < 1:
            raise ValueError(f"max_per_minute must be 1 or more, not {max_per_minute}")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.max_per_minute = max_per_minute
        self._clock = clock
        self._queries: deque[float] = deque()
        self.interval = min_interval
        """Seconds between two status queries now (grows while nothing changes)."""
        self.answered_at = -float("inf")
        """When (on the clock) the last status answer arrived."""

    def allowed(self) -> bool:
        """Whether one more query keeps within `max_per_minute` (status or any other kind)."""
        now = self._clock()
        while self._queries and now - self._queries[0] > _WINDOW:
            self._queries.popleft()
        return len(self._queries) < self.max_per_minute

    def due(self) -> bool:
        """Whether a status query should be made now: the interval has passed and the rate
        limit allows it."""
        return self._clock() - self.answered_at >= self.interval and self.allowed()

    def count(self) -> None:
        """Record that a query is being made (call it before asking, successful or not)."""
        self._queries.append(self._clock())

    def answered(self, changed: bool) -> None:
        """Record a status answer: back off while nothing changes, start short after a change."""
        self.answered_at = self._clock()
        self.interval = self.min_interval if changed else min(self.interval * 2, self.max_interval)

    def hurry(self) -> None:
        """Something was submitted or killed: look again soon (still under the rate limit)."""
        self.interval = self.min_interval

    def since_answer(self) -> float:
        """Seconds since the last status answer (infinite before the first)."""
        return self._clock() - self.answered_at
