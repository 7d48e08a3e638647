"""The Kubernetes backend through the conformance kit, on the emulator (or a real cluster)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
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
from jobfleet.plugins.kubernetes.distributor import KubernetesDistributor
from jobfleet.plugins.kubernetes.queue import KubernetesQueue
from jobfleet.plugins.kubernetes.worker_node import INDEX_VARIABLE, JOB_VARIABLE


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kube_target = _load("kube_target")
target = kube_target.target

# The emulator's default nodes: node-a (4 cores, on-demand) takes the kit's tasks; node-b is a
# spot node whose taint keeps non-preemptible work off it.
EMULATOR_CORES = 4


class TestKubernetesRegistration(RegistrationTests):
    cluster_name = "kubernetes"


class TestKubernetesQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> KubernetesQueue:
        return KubernetesQueue(1, "k8s", {"max_cores": 8, "max_memory": "8G", "max_runtime": "1d"})


class TestKubernetesDistributor(DistributorTests):
    backend_name = "kubernetes"
    channel_transport = "http"  # pods share no file system with the host
    many_jobs = 50
    # The emulator's kubelet runs containers as local processes on this machine, so the kit
    # can signal wrappers and see their files; a real cluster cannot (see conftest's target).
    capabilities = Capabilities(local_processes=True, shared_filesystem=True)

    @pytest.fixture
    def make_distributor(self, target: Any) -> Callable[..., KubernetesDistributor]:
        if not target.emulated:
            self.capabilities = Capabilities(local_processes=False, shared_filesystem=False)
        settings = target.settings(pass_env="JOBFLEET_KIT_*")  # noqa: S106 - names
        return lambda *, host_url, **token: KubernetesDistributor(
            "kit", host_url=host_url, settings=settings, **token
        )

    @pytest.fixture
    def cores_available(self, target: Any) -> int | None:
        return EMULATOR_CORES if target.emulated else None

    @pytest.fixture
    def status_query_counter(self, target: Any) -> Callable[[], int] | None:
        if not target.emulated:
            return None
        emu = target.emu
        return lambda: sum(emu.request_count(verb=v) for v in ("list", "get", "watch"))


class TestPackedKubernetesDistributor(TestKubernetesDistributor):
    """The same contracts with every job a member of a packed array element (issue 16): the
    member kills go through the http channel."""

    packed = True


class TestKubernetesWorkerNode(WorkerNodeTests):
    cluster_name = "kubernetes"

    @pytest.fixture
    def task_environment(self) -> Callable[[str, int | None], dict[str, str]]:
        # A task's Job names it; an array's pods also get Kubernetes' completion index.
        def environment(distributor_id: str, step: int | None) -> dict[str, str]:
            env = {JOB_VARIABLE: distributor_id}
            if step is not None:
                env[INDEX_VARIABLE] = str(step)
            return env

        return environment


def test_an_array_pod_names_itself_as_the_distributor_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobfleet.plugins.kubernetes.worker_node import (
        ARRAY_JOB_VARIABLE,
        KubernetesWorkerNode,
    )

    monkeypatch.setenv(ARRAY_JOB_VARIABLE, "jf-0123456789-a-deadbeef")
    monkeypatch.setenv(INDEX_VARIABLE, "7")
    monkeypatch.delenv(JOB_VARIABLE, raising=False)
    node = KubernetesWorkerNode()
    assert node.distributor_id == "jf-0123456789-a-deadbeef_7"
    assert node.array_step_id == 7
