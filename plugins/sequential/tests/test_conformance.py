"""The sequential backend through the conformance kit: a few lines, as for any backend."""

from collections.abc import Callable

import pytest

from jobfleet.core.local.queue import LocalQueue
from jobfleet.core.testing import DistributorTests, QueueTests, RegistrationTests, WorkerNodeTests
from jobfleet.plugins.sequential.distributor import SequentialDistributor
from jobfleet.plugins.sequential.settings import SequentialSettings


class TestSequentialRegistration(RegistrationTests):
    cluster_name = "sequential"


class TestSequentialQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> LocalQueue:
        return LocalQueue(1, "local", {"max_cores": 2, "max_memory": "4G", "max_runtime": "1d"})


class TestSequentialDistributor(DistributorTests):
    backend_name = "sequential"

    @pytest.fixture
    def make_distributor(self) -> Callable[..., SequentialDistributor]:
        settings = SequentialSettings(kill_grace=1)
        return lambda *, host_url: SequentialDistributor(
            "kit", host_url=host_url, settings=settings
        )

    @pytest.fixture
    def cores_available(self) -> int:
        return 1  # one job at a time, whatever it asks for


class TestSequentialWorkerNode(WorkerNodeTests):
    cluster_name = "sequential"
