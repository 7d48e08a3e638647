"""The Mesos backend through the conformance kit, on the loopback master and agents."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.testing import (
    Capabilities,
    DistributorTests,
    QueueTests,
    RegistrationTests,
    WorkerNodeTests,
)
from jobfleet.plugins.mesos.distributor import MesosDistributor
from jobfleet.plugins.mesos.queue import MesosQueue
from jobfleet.plugins.mesos.worker_node import STEP_VARIABLE, TASK_VARIABLE


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


helpers = _load("mesos_helpers")

# One agent of 4 cpus, so that the kit's concurrency tests count exactly what one offer holds.
AGENT_CORES = 4


class TestMesosRegistration(RegistrationTests):
    cluster_name = "mesos"


class TestMesosQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> MesosQueue:
        return MesosQueue(1, "mesos", {"max_cores": 8, "max_memory": "8G", "max_runtime": "1d"})


class TestMesosDistributor(DistributorTests):
    backend_name = "mesos"
    channel_transport = "http"  # agents share no file system with the host
    state_dir = True
    many_jobs = 50
    # The emulator's agents run executors (and so the wrappers) as local processes on this
    # machine: the kit can signal wrappers and see their files. Memory and runtime limits are
    # the wrapper's own (its cgroup and its timer), as for every backend.
    capabilities = Capabilities(local_processes=True, shared_filesystem=True)

    @pytest.fixture
    def mesos(self, tmp_path: Path) -> Iterator[Any]:
        emulator = sys.modules["mesos_emulator"]
        mc = emulator.MesosCluster(tmp_path / "mesos", agents=0)
        mc.add_agent(cpus=float(AGENT_CORES), mem=8192, disk=10000)
        try:
            yield mc
        finally:
            mc.stop()
        assert not mc.internal_errors, "\n".join(mc.internal_errors)

    @pytest.fixture
    def make_distributor(self, mesos: Any) -> Callable[..., MesosDistributor]:
        settings = helpers.settings_for(mesos, pass_env="JOBFLEET_KIT_*")  # noqa: S106 - names
        return lambda *, host_url, **kwargs: MesosDistributor(
            "kit", host_url=host_url, settings=settings, **kwargs
        )

    @pytest.fixture
    def cores_available(self) -> int:
        return AGENT_CORES

    @pytest.fixture
    def status_query_counter(self, mesos: Any) -> Callable[[], int]:
        # Every call the scheduler makes to the master; a status round must make none.
        return lambda: mesos.call_count()


class TestPackedMesosDistributor(TestMesosDistributor):
    """The same contracts with every job a member of a packed array element (issue 16): the
    member kills go through the http channel."""

    packed = True


class TestMesosWorkerNode(WorkerNodeTests):
    cluster_name = "mesos"

    @pytest.fixture
    def task_environment(self) -> Callable[[str, int | None], dict[str, str]]:
        def environment(distributor_id: str, step: int | None) -> dict[str, str]:
            env = {TASK_VARIABLE: distributor_id}
            if step is not None:
                env[STEP_VARIABLE] = str(step)
            return env

        return environment
