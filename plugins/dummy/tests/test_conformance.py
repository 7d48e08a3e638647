"""The dummy backend through the conformance kit: a few lines, as for any backend."""

from collections.abc import Callable

import pytest

from jobfleet.core.testing import (
    Capabilities,
    DistributorTests,
    QueueTests,
    RegistrationTests,
    WorkerNodeTests,
)
from jobfleet.plugins.dummy.distributor import DummyDistributor
from jobfleet.plugins.dummy.queue import DummyQueue
from jobfleet.plugins.dummy.settings import DummySettings


class TestDummyRegistration(RegistrationTests):
    cluster_name = "dummy"


class TestDummyQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> DummyQueue:
        limits = {
            "max_cores": 8,
            "max_memory": "16G",
            "max_runtime": "1d",
            "max_gpus": 2,
            "default_cores": 1,
            "default_memory": "1G",
            "default_runtime": "1h",
            "default_gpus": 0,
        }
        return DummyQueue(1, "all", limits)


class TestDummyDistributor(DistributorTests):
    backend_name = "dummy"
    capabilities = Capabilities(runs_commands=False)

    @pytest.fixture
    def make_distributor(self) -> Callable[..., DummyDistributor]:
        # The dummy runs nothing, so it has no use for the host channel's URL. Instances stay
        # "running" long enough for the kill contracts to be checked.
        def make(*, host_url: str) -> DummyDistributor:
            return DummyDistributor("dummy-test", settings=DummySettings(report_delay=600))

        return make


class TestDummyWorkerNode(WorkerNodeTests):
    cluster_name = "dummy"
