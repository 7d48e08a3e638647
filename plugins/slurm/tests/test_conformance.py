"""The Slurm backend through the conformance kit, against the real Slurm of conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobfleet.core.testing import DistributorTests, QueueTests, RegistrationTests, WorkerNodeTests
from jobfleet.plugins.slurm.commands import SlurmCommands
from jobfleet.plugins.slurm.distributor import SlurmDistributor
from jobfleet.plugins.slurm.queue import SlurmQueue
from jobfleet.plugins.slurm.settings import SlurmSettings

# Quick polling for tests (the defaults spare a shared cluster's controller).
TEST_SETTINGS = SlurmSettings(poll_min=0.2, poll_max=1.0, max_queries_per_minute=6000)


class TestSlurmRegistration(RegistrationTests):
    cluster_name = "slurm"


class TestSlurmQueue(QueueTests):
    @pytest.fixture
    def queue(self) -> SlurmQueue:
        return SlurmQueue(1, "debug", {"max_cores": 8, "max_memory": "8G", "max_runtime": "1d"})


class TestSlurmDistributor(DistributorTests):
    backend_name = "slurm"
    many_jobs = 50

    @pytest.fixture
    def commands(self, slurm_cluster: Any) -> SlurmCommands:
        return SlurmCommands()

    @pytest.fixture
    def make_distributor(self, commands: SlurmCommands) -> Callable[..., SlurmDistributor]:
        return lambda *, host_url: SlurmDistributor(
            "kit", settings=TEST_SETTINGS, host_url=host_url, commands=commands
        )

    @pytest.fixture
    def cores_available(self, slurm_cluster: Any) -> int:
        return int(slurm_cluster.cpus)

    @pytest.fixture
    def status_query_counter(self, commands: SlurmCommands) -> Callable[[], int]:
        return lambda: commands.calls["squeue"] + commands.calls["sacct"]


class TestPackedSlurmDistributor(TestSlurmDistributor):
    """The same contracts with every job a member of a packed array element (issue 16)."""

    packed = True


class TestSlurmWorkerNode(WorkerNodeTests):
    cluster_name = "slurm"

    @pytest.fixture
    def task_environment(self) -> Callable[[str, int | None], dict[str, str]]:
        # What Slurm sets (less SLURM_ARRAY_JOB_ID, so that the kit's own id comes through).
        def environment(distributor_id: str, step: int | None) -> dict[str, str]:
            env = {"SLURM_JOB_ID": distributor_id}
            if step is not None:
                env["SLURM_ARRAY_TASK_ID"] = str(step)
            return env

        return environment


def test_array_tasks_are_named_like_squeue_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobfleet.plugins.slurm.worker_node import SlurmWorkerNode

    monkeypatch.setenv("SLURM_JOB_ID", "130")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "123")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("JOBFLEET_ARRAY_OFFSET", "1001")
    node = SlurmWorkerNode()
    assert node.distributor_id == "123_7"
    assert node.array_step_id == 1008  # the second chunk of a big array
