"""The multiprocess backend through the conformance kit: a few lines, as for any backend."""

from collections.abc import Callable

import pytest

from jobfleet.core.channel import FinalReport
from jobfleet.core.local.queue import LocalQueue
from jobfleet.core.testing import (
    DistributorTests,
    KitHost,
    QueueTests,
    RegistrationTests,
    WorkerNodeTests,
)
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
        return lambda *, host_url, channel_token=None: MultiprocessDistributor(
            "kit", host_url=host_url, settings=settings, channel_token=channel_token
        )

    @pytest.fixture
    def cores_available(self) -> int:
        return CORES


class TestMultiprocessDistributorOverHttp(TestMultiprocessDistributor):
    """The same contract with the channel served over HTTP, as pods on Kubernetes use it: the
    token reaches each wrapper through its environment."""

    channel_transport = "http"

    def test_the_token_is_in_no_argv_nor_in_the_task_environment(
        self, distributor: MultiprocessDistributor, kit_host: KitHost
    ) -> None:
        assert kit_host.url.startswith("http://127.0.0.1:")
        assert kit_host.token
        argv = distributor.wrapper_argv(distributor.build_worker_node_command(task_instance_id=1))
        assert kit_host.url in argv
        assert not any(kit_host.token in word for word in argv)
        submitted = kit_host.submit(distributor, "env; echo END")
        final = kit_host.wait_report(FinalReport, submitted.task_instance_id)
        assert final.error_state == "D", final.message
        assert "END" in final.stdout_tail
        assert kit_host.token not in final.stdout_tail
        assert "JOBFLEET_CHANNEL_TOKEN" not in final.stdout_tail


class TestMultiprocessDistributorOneShot(DistributorTests):
    """The same contract with slot workers off: one worker-node process per instance."""

    backend_name = "multiprocess"

    @pytest.fixture
    def make_distributor(self) -> Callable[..., MultiprocessDistributor]:
        settings = MultiprocessSettings(cores=CORES, memory="4G", kill_grace=1, slot_workers=False)
        return lambda *, host_url, channel_token=None: MultiprocessDistributor(
            "kit", host_url=host_url, settings=settings, channel_token=channel_token
        )

    @pytest.fixture
    def cores_available(self) -> int:
        return CORES


class TestMultiprocessWorkerNode(WorkerNodeTests):
    cluster_name = "multiprocess"
