"""The sequential distributor: the multiprocess one, with a single slot."""

from __future__ import annotations

from typing import Any, ClassVar

from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings
from jobfleet.plugins.sequential.settings import SequentialSettings


class SequentialDistributor(MultiprocessDistributor):
    """One task instance at a time, in submission order, whatever it asks for.

    The pool is the whole machine, so a request that could never run here is still refused
    at submission; the single slot is what makes it sequential.
    """

    cluster_type: ClassVar[str] = "sequential"
    max_parallel: ClassVar[int | None] = 1

    def __init__(
        self,
        cluster_name: str,
        *args: Any,
        settings: SequentialSettings | None = None,
        host_url: str | None = None,
        **connection_parameters: Any,
    ) -> None:
        chosen = settings or SequentialSettings()
        local = MultiprocessSettings(
            kill_grace=chosen.kill_grace, cgroup=chosen.cgroup, overtake_limit=0
        )
        super().__init__(
            cluster_name, *args, settings=local, host_url=host_url, **connection_parameters
        )
