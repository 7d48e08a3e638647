"""The compute side end to end: Jobmon's worker run inside jobfleet's wrapper, for real.

Jobmon's own code builds the worker-node commands and runs on the node (its
`worker_node_entry_point`, imported through `ClusterType(...)`); jobfleet's multiprocess backend
starts real wrappers; the stand-in for Jobmon's server (conftest.py) records what Jobmon would
have been told.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("jobmon.worker_node.cli", reason="needs the `jobmon` dependency group")

from jobmon.core.cluster_type import ClusterType
from jobmon.core.exceptions import RemoteExitInfoNotAvailable

pytestmark = pytest.mark.slow

CLUSTER = "jf-local"
TIMEOUT = 120.0


def wait(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def exit_info(distributor: Any, distributor_id: str) -> tuple[str, str]:
    def answer() -> tuple[str, str] | None:
        try:
            return distributor.get_remote_exit_info(distributor_id)  # type: ignore[no-any-return]
        except RemoteExitInfoNotAvailable:
            return None

    return wait(answer, f"triage of {distributor_id}")  # type: ignore[no-any-return]


@pytest.fixture
def distributor(jobmon_server, tmp_path):
    parameters = {
        "settings": {"cores": 4},
        "work_dir": str(tmp_path / "work"),
        "triage_patience": 60,
    }
    jobmon_server.clusters[CLUSTER] = ("jobfleet_multiprocess", parameters)
    built = ClusterType("jobfleet_multiprocess").cluster_distributor_class(CLUSTER, **parameters)
    built.start()
    yield built
    built.stop()


def test_done_failure_retried_and_an_array(distributor, jobmon_server, tmp_path):
    marker = tmp_path / "failed-once"
    logs = tmp_path / "logs"
    jobmon_server.add_task(1, "echo hello from the task", str(logs))
    # Fails the first time, succeeds on the retry (Jobmon's next task instance of the task).
    flaky = f"test -e {marker} || {{ touch {marker}; echo broken >&2; exit 3; }}"
    jobmon_server.add_task(2, flaky)
    ids = {
        ti: distributor.submit_to_batch_distributor(
            distributor.build_worker_node_command(task_instance_id=ti),
            f"task-{ti}",
            {"cores": 1, "memory": 1, "runtime": 60, "queue": "default"},
        )
        for ti in (1, 2)
    }
    assert wait(lambda: jobmon_server.ended(1), "task instance 1") == "D"
    assert wait(lambda: jobmon_server.ended(2), "task instance 2") == "E"
    error = jobmon_server.message(2, "log_error_worker_node")
    assert "exit code 3" in error["error_description"]
    assert "broken" in error["stderr_log"]
    # The distributor ids Jobmon hears from the worker are the ones the distributor returned.
    assert jobmon_server.message(1, "log_running")["distributor_id"] == ids[1]
    assert (logs / f"task-1.o{ids[1]}").read_text() == "hello from the task\n"

    jobmon_server.add_task(3, flaky)  # Jobmon's retry: a new task instance
    distributor.submit_to_batch_distributor(
        distributor.build_worker_node_command(task_instance_id=3), "task-2", {"cores": 1}
    )
    assert wait(lambda: jobmon_server.ended(3), "the retry") == "D"

    # An array batch: one submission, 0-based steps, each step finding its task instance.
    for step, ti in enumerate((10, 11)):
        jobmon_server.arrays[(7, 0, step)] = ti
        jobmon_server.add_task(ti, f"echo step {step}")
    steps = distributor.submit_array_to_batch_distributor(
        distributor.build_worker_node_command(array_id=7, batch_number=0), "array-7", {}, 2
    )
    assert sorted(steps) == [0, 1]
    assert wait(lambda: jobmon_server.ended(10) and jobmon_server.ended(11), "the array")
    assert jobmon_server.message(11, "log_running")["distributor_id"] == steps[1]
    wait(lambda: not distributor.get_submitted_or_running(list(steps.values())), "the ends")


def test_a_runtime_kill_reaches_jobmon_as_z(distributor, jobmon_server):
    jobmon_server.add_task(1, "sleep 100")
    distributor_id = distributor.submit_to_batch_distributor(
        distributor.build_worker_node_command(task_instance_id=1), "sleepy", {"runtime": 10}
    )
    # Jobmon's worker takes seconds to start (imports): the limit leaves it time to report.
    wait(lambda: jobmon_server.statuses(1), "log_running", timeout=30)
    # The wrapper kills Jobmon's worker with its command: Jobmon hears nothing, and its triage
    # asks the distributor, which has the wrapper's final report.
    state, message = exit_info(distributor, distributor_id)
    assert state == "Z", message
    assert jobmon_server.ended(1) is None


def _writable_memory_cgroup() -> str | None:
    from jobfleet.worker_node.cgroup import TaskCgroup

    cgroup, why = TaskCgroup.try_create("jobmon-probe", 1 << 30)
    if cgroup is None:
        return why
    cgroup.remove()
    return None


def test_an_oom_kill_reaches_jobmon_as_z(distributor, jobmon_server):
    why = _writable_memory_cgroup()
    if why:
        pytest.skip(f"needs a writable cgroup v1 memory controller: {why}")
    # 1 GiB is the least Jobmon can ask for; the command touches 2 GiB.
    hog = f"{sys.executable} -c \"b = b'x' * (2 * 1024**3); print(len(b))\""
    jobmon_server.add_task(1, hog)
    distributor_id = distributor.submit_to_batch_distributor(
        distributor.build_worker_node_command(task_instance_id=1), "hog", {"memory": 1}
    )
    state = wait(lambda: jobmon_server.ended(1), "the hog's end")
    message = jobmon_server.message(1, "log_error_worker_node")["error_description"]
    assert state == "Z", message
    assert "OOM kill" in message
    assert distributor_id


def test_a_backend_that_runs_nothing_reports_to_jobmon_itself(jobmon_server, tmp_path):
    jobmon_server.clusters["jf-dummy"] = ("jobfleet_dummy", {})
    dummy = ClusterType("jobfleet_dummy").cluster_distributor_class("jf-dummy")
    dummy.start()
    try:
        jobmon_server.add_task(1, "never run")
        distributor_id = dummy.submit_to_batch_distributor(
            dummy.build_worker_node_command(task_instance_id=1), "t", {}
        )
        assert jobmon_server.statuses(1) == ["log_running", "log_done"]
        assert jobmon_server.message(1, "log_done")["distributor_id"] == distributor_id
        jobmon_server.arrays[(3, 0, 0)] = 5
        jobmon_server.add_task(5, "never run")
        dummy.submit_array_to_batch_distributor(
            dummy.build_worker_node_command(array_id=3, batch_number=0), "a", {}, 1
        )
        assert jobmon_server.statuses(5) == ["log_running", "log_done"]
    finally:
        dummy.stop()


@pytest.mark.parametrize("channel", ["http", "shared directory"])
def test_the_channel_kinds_a_cluster_can_name(jobmon_server, tmp_path, channel):
    shared = tmp_path / "shared"
    parameters = {"channel": "http" if channel == "http" else str(shared)}
    jobmon_server.clusters["jf-channel"] = ("jobfleet_multiprocess", parameters)
    built = ClusterType("jobfleet_multiprocess").cluster_distributor_class(
        "jf-channel", **parameters
    )
    built.start()
    try:
        if channel == "http":
            assert built._inner.host_url.startswith("http://127.0.0.1:")
            assert built._inner.channel_token
        else:
            (made,) = shared.iterdir()  # a fresh directory per distributor under the shared one
            assert built._inner.host_url.endswith(str(made))
        jobmon_server.add_task(1, "echo over the channel")
        distributor_id = built.submit_to_batch_distributor(
            built.build_worker_node_command(task_instance_id=1), "t", {"runtime": 60}
        )
        assert wait(lambda: jobmon_server.ended(1), "the task") == "D"
        # Its final report came back over the channel: triage would read it.
        wait(lambda: not built.get_submitted_or_running([distributor_id]), "its end")
        assert built._finals[int(distributor_id)].error_state == "D"
    finally:
        built.stop()
    if channel != "http":
        assert list(shared.iterdir()) == []  # the distributor's directory goes with it
