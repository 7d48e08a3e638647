"""What the dummy does beyond the kit: done at once, delays, failures on purpose, kills."""

import json
import time

import pytest

from jobfleet.core.errors import SettingsError
from jobfleet.core.exit_info import ErrorState, ExitReason
from jobfleet.core.plugins import PluginRegistry
from jobfleet.plugins.dummy.distributor import DummyDistributor
from jobfleet.plugins.dummy.settings import DummySettings
from jobfleet.plugins.dummy.worker_node import DummyWorkerNode


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_submitted_instance_is_done_at_once():
    distributor = DummyDistributor("d")
    distributor_id = distributor.submit_to_batch_distributor("job --task-instance-id 1", "t", {})
    assert distributor.get_submitted_or_running([distributor_id]) == set()
    info = distributor.get_remote_exit_info(distributor_id)
    assert info.error_state is ErrorState.DONE
    assert info.finalized
    assert info.record is not None
    assert info.record.reason is ExitReason.COMPLETED
    assert info.record.exit_code == 0


def test_report_delay_keeps_instance_running_then_done():
    distributor = DummyDistributor("d", settings=DummySettings(report_delay=0.3))
    distributor_id = distributor.submit_to_batch_distributor("job", "t", {})
    assert distributor.get_submitted_or_running([distributor_id]) == {distributor_id}
    running = distributor.get_remote_exit_info(distributor_id)
    assert running.error_state is ErrorState.UNKNOWN_ERROR
    assert not running.finalized
    wait_until(lambda: not distributor.get_submitted_or_running([distributor_id]))
    assert distributor.get_remote_exit_info(distributor_id).error_state is ErrorState.DONE


def test_fail_every_reports_application_errors():
    distributor = DummyDistributor("d", settings=DummySettings(fail_every=3))
    steps = distributor.submit_array_to_batch_distributor("array", "t", {}, 6)
    states = [distributor.get_remote_exit_info(steps[step]).error_state for step in range(6)]
    assert states == ["D", "D", "E", "D", "D", "E"]


def test_kill_of_running_instance_is_k_and_of_finished_one_changes_nothing():
    distributor = DummyDistributor("d", settings=DummySettings(report_delay=60))
    running = distributor.submit_to_batch_distributor("job", "running", {})
    distributor.terminate_task_instances([running])
    assert distributor.get_submitted_or_running([running]) == set()
    assert distributor.get_remote_exit_info(running).error_state is ErrorState.KILL_SELF

    quick = DummyDistributor("d")
    done = quick.submit_to_batch_distributor("job", "done", {})
    quick.terminate_task_instances([done])
    assert quick.get_remote_exit_info(done).error_state is ErrorState.DONE


def test_ids_differ_between_distributors():
    first = DummyDistributor("d").submit_to_batch_distributor("job", "t", {})
    second = DummyDistributor("d").submit_to_batch_distributor("job", "t", {})
    assert first != second


def test_array_of_zero_is_refused():
    with pytest.raises(ValueError, match="array_length"):
        DummyDistributor("d").submit_array_to_batch_distributor("array", "t", {}, 0)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"JOBFLEET_DUMMY_REPORT_DELAY": "-1"}, "report_delay must be 0 or more"),
        ({"JOBFLEET_DUMMY_REPORT_DELAY": "soon"}, "JOBFLEET_DUMMY_REPORT_DELAY='soon'"),
        ({"JOBFLEET_DUMMY_FAIL_EVERY": "1.5"}, "expected a whole number"),
    ],
)
def test_bad_settings_name_the_variable_or_field(environ, message):
    plugin = PluginRegistry(environ={}).get_cluster("dummy")
    with pytest.raises(SettingsError, match=message):
        plugin.settings(environ=environ)


def test_settings_from_environment_reach_the_distributor():
    plugin = PluginRegistry(environ={}).get_cluster("dummy")
    settings = plugin.settings(environ={"JOBFLEET_DUMMY_FAIL_EVERY": "1"})
    distributor = plugin.distributor_class("d", settings=settings)
    distributor_id = distributor.submit_to_batch_distributor("job", "t", {})
    assert (
        distributor.get_remote_exit_info(distributor_id).error_state is ErrorState.ERROR_RECOVERABLE
    )


def test_worker_node_reads_its_ids_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOBFLEET_DISTRIBUTOR_ID", "abc-1")
    monkeypatch.setenv("JOBFLEET_ARRAY_STEP_ID", "4")
    node = DummyWorkerNode()
    assert node.distributor_id == "abc-1"
    assert node.array_step_id == 4
    monkeypatch.delenv("JOBFLEET_ARRAY_STEP_ID")
    assert node.array_step_id is None


def test_worker_node_exit_info_and_usage(tmp_path):
    node = DummyWorkerNode()
    assert node.get_exit_info(0, "")[0] == "D"
    assert node.get_exit_info(3, "boom") == ("E", "boom")
    assert node.get_exit_info(127, "") == ("F", "launcher_error: exit code 127")
    usage = node.get_usage_stats()
    assert usage["wallclock"] >= 0
    assert json.loads(usage["usage_str"])["maxrss_source"] == "rusage"
    path = node.initialize_logfile("stdout", str(tmp_path / "logs"), "a/b $(rm -rf ~)")
    assert path.startswith(str(tmp_path / "logs") + "/")
    assert "/" not in path.removeprefix(str(tmp_path / "logs") + "/")
    assert "$" not in path
