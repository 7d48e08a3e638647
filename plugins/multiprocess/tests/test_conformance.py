"""The multiprocess backend through the conformance kit: a few lines, as for any backend."""

from collections.abc import Callable

import pytest

from jobfleet.core.local.queue import LocalQueue
from jobfleet.core.testing import DistributorTests, QueueTests, RegistrationTests, WorkerNodeTests
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

CORES = 4


class TestMultiprocessRegistration(RegistrationTests):
    cluster_name = "multiprocess"


class TestMultiprocessQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> LocalQueue:
        return LocalQueue(1, "local", {"max_cores": 2, "max_memory": "4G", "max_runtime": "1d"})


class TestMultiprocessDistributor(DistributorTests):
    backend_name = "multiprocess"

    @pytest.fixture
    def make_distributor(self) -> Callable[..., MultiprocessDistributor]:
        # A pool of 4 cores even on a 2-core machine: the pool is bookkeeping, and the kit's
        # tasks mostly sleep. A short kill grace keeps the kill tests quick.
        settings = MultiprocessSettings(cores=CORES, memory="4G", kill_grace=1)
        return lambda *, host_url: MultiprocessDistributor(
            "kit", host_url=host_url, settings=settings
        )

    @pytest.fixture
    def cores_available(self) -> int:
        return CORES


class TestMultiprocessWorkerNode(WorkerNodeTests):
    cluster_name = "multiprocess"
