"""Conformance: the backend's worker node, alone and inside the real worker-node wrapper."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from jobfleet.core.base_worker_node import BaseClusterWorkerNode
from jobfleet.core.channel import Channel, FinalReport, TaskSpec, open_channel
from jobfleet.core.cluster_protocol import ClusterWorkerNode
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.plugins import PluginRegistry

HOSTILE_NAMES = ("a/b/../../c", "$(touch pwned)", 'it\'s "quoted"', "x" * 400, ".hidden", "")

TaskEnvironment = Callable[[str, int | None], dict[str, str]]


class WorkerNodeTests:
    """Subclass with `cluster_name`; override `task_environment` unless the worker node is a
    `BaseClusterWorkerNode` (whose variable names the kit reads from the class)."""

    cluster_name: str = ""

    @pytest.fixture
    def worker_node_class(self) -> type[ClusterWorkerNode]:
        if not self.cluster_name:
            raise NotImplementedError(
                "set the class attribute `cluster_name` to the entry point name"
            )
        return PluginRegistry(environ={}).get_cluster(self.cluster_name).worker_node_class

    @pytest.fixture
    def task_environment(self, worker_node_class: type[ClusterWorkerNode]) -> TaskEnvironment:
        """The variables the backend sets for a task with this distributor id and array step."""
        if not issubclass(worker_node_class, BaseClusterWorkerNode):
            raise NotImplementedError(
                "override `task_environment` to return the backend's variables"
            )

        def environment(distributor_id: str, step: int | None) -> dict[str, str]:
            env = {worker_node_class.distributor_id_variables[0]: distributor_id}
            if step is not None:
                env[worker_node_class.array_step_variables[0]] = str(step)
            return env

        return environment

    # -- the class alone ----------------------------------------------------------------------

    def test_reads_its_ids_from_the_environment(
        self,
        worker_node_class: type[ClusterWorkerNode],
        task_environment: TaskEnvironment,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for name, value in task_environment("kit-42", 3).items():
            monkeypatch.setenv(name, value)
        node = worker_node_class()
        assert node.distributor_id == "kit-42"
        assert node.array_step_id == 3

    def test_outside_an_array_there_is_no_step(
        self,
        worker_node_class: type[ClusterWorkerNode],
        task_environment: TaskEnvironment,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        with_step = task_environment("kit-42", 3)
        for name in set(with_step) - set(task_environment("kit-42", None)):
            monkeypatch.delenv(name, raising=False)
        for name, value in task_environment("kit-42", None).items():
            monkeypatch.setenv(name, value)
        assert worker_node_class().array_step_id is None

    @pytest.mark.parametrize(("exit_code", "state"), [(0, "D"), (1, "E"), (3, "E")])
    def test_exit_codes_map_to_jobmon_letters(
        self, worker_node_class: type[ClusterWorkerNode], exit_code: int, state: str
    ) -> None:
        got, message = worker_node_class().get_exit_info(exit_code, "kit")
        assert ErrorState(got) == state
        assert isinstance(message, str)

    def test_usage_stats_have_the_protocol_keys(
        self, worker_node_class: type[ClusterWorkerNode]
    ) -> None:
        usage = worker_node_class().get_usage_stats()
        assert {"maxrss", "cpu", "wallclock", "usage_str"} <= set(usage)
        assert usage["maxrss"] >= 0
        assert usage["cpu"] >= 0
        assert usage["wallclock"] >= 0
        assert isinstance(json.loads(usage["usage_str"]), dict)

    @pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
    def test_log_files_stay_in_their_directory(
        self, worker_node_class: type[ClusterWorkerNode], tmp_path: Path, name: str
    ) -> None:
        directory = tmp_path / "logs"
        path = Path(worker_node_class().initialize_logfile("stdout", str(directory), name))
        assert path.parent == directory
        assert len(path.name.encode()) <= 255
        assert path.exists()
        assert not (tmp_path / "pwned").exists()

    # -- inside the real wrapper --------------------------------------------------------------

    @pytest.fixture
    def channel(self, tmp_path: Path) -> Channel:
        return open_channel(f"file://{tmp_path / 'channel'}", create=True)

    def _wrapper(self) -> str:
        wrapper = shutil.which("jobfleet-worker-node")
        if wrapper is None:
            pytest.skip("jobfleet-worker-node is not installed (pip install jobfleet-worker-node)")
        return wrapper

    def _run(
        self, channel: Channel, args: list[str], env: dict[str, str]
    ) -> dict[int, FinalReport]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
        argv = [self._wrapper(), *args, "--cluster", self.cluster_name, "--host-url", channel.url]
        subprocess.run(argv, env={**environ, **env}, check=False, timeout=300, capture_output=True)
        events, _ = channel.read_events()
        return {e.task_instance_id: e.report for e in events if isinstance(e.report, FinalReport)}

    @pytest.mark.parametrize(("command", "state"), [("exit 0", "D"), ("exit 3", "E")])
    def test_wrapper_reports_through_this_worker_node(
        self,
        channel: Channel,
        task_environment: TaskEnvironment,
        tmp_path: Path,
        command: str,
        state: str,
    ) -> None:
        channel.put_spec(TaskSpec(7, command, "kit-task", stdout_dir=str(tmp_path / "logs")))
        finals = self._run(
            channel, ["job", "--task-instance-id", "7"], task_environment("kit-7", None)
        )
        assert finals[7].error_state == state
        assert finals[7].distributor_id == "kit-7"

    def test_wrapper_runs_the_step_this_worker_node_names(
        self, channel: Channel, task_environment: TaskEnvironment
    ) -> None:
        for task_instance_id in (20, 21, 22):
            channel.put_spec(TaskSpec(task_instance_id, "exit 0", f"step-{task_instance_id}"))
        channel.put_array(4, 1, {0: 20, 1: 21, 2: 22})
        args = ["array", "--array-id", "4", "--batch-number", "1"]
        finals = self._run(channel, args, task_environment("kit-array", 2))
        assert list(finals) == [22]
        assert finals[22].error_state == "D"
