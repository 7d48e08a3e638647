"""The wrapper as others see it: the shared exit mapping, its entry point, the distributor base."""

from __future__ import annotations

import signal
import sys

import pytest

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import ErrorState, ExitReason, RemoteExitInfo
from jobfleet.core.polling import Poller
from jobfleet.core.wrapper import (
    ENTRY_POINT_VARIABLE,
    HOST_URL_VARIABLE,
    entry_point_argv,
    exit_info_from_wrapper,
    status_from_output,
    status_line,
)

D, E, Z, U, F = "D", "E", "Z", "U", "F"


@pytest.mark.parametrize(
    ("exit_code", "signal_number", "evidence", "state", "reason", "record_code", "record_signal"),
    [
        (0, None, None, D, ExitReason.COMPLETED, 0, None),
        (1, None, None, E, ExitReason.FAILED, 1, None),
        (2, None, None, E, ExitReason.FAILED, 2, None),
        (126, None, None, F, ExitReason.LAUNCHER_ERROR, 126, None),
        (127, None, None, F, ExitReason.LAUNCHER_ERROR, 127, None),
        (240, None, None, U, ExitReason.LOST, 240, None),
        (241, None, None, F, ExitReason.LAUNCHER_ERROR, 241, None),
        # The wrapper passes "the task died of signal N" on as 128 + N.
        (137, None, None, E, ExitReason.FAILED, None, signal.SIGKILL),
        (139, None, None, E, ExitReason.FAILED, None, signal.SIGSEGV),
        (137, None, "the cgroup counted 1 OOM kill", Z, ExitReason.OOM, None, signal.SIGKILL),
        (143, None, "the cgroup counted 1 OOM kill", E, ExitReason.FAILED, None, signal.SIGTERM),
        (255, None, None, E, ExitReason.FAILED, 255, None),
        # The wrapper itself died of a signal: as subprocess says it (-N), or apart (Slurm 0:N).
        (-9, None, None, U, ExitReason.LOST, None, signal.SIGKILL),
        (-15, None, None, U, ExitReason.LOST, None, signal.SIGTERM),
        (0, signal.SIGKILL, None, U, ExitReason.LOST, None, signal.SIGKILL),
        (-9, None, "Slurm state OUT_OF_MEMORY", Z, ExitReason.OOM, None, signal.SIGKILL),
        (None, signal.SIGKILL, "the kernel counted 2", Z, ExitReason.OOM, None, signal.SIGKILL),
        (None, None, None, U, ExitReason.LOST, None, None),
    ],
)
def test_one_table_for_every_wrapper_end(
    exit_code, signal_number, evidence, state, reason, record_code, record_signal
):
    info = exit_info_from_wrapper(exit_code, signal_number, oom_evidence=evidence)
    assert isinstance(info, RemoteExitInfo)
    assert info.finalized
    assert info.error_state is ErrorState(state), info.error_message
    assert info.record is not None
    assert info.record.reason is reason
    assert (info.record.exit_code, info.record.signal) == (record_code, record_signal)
    assert info.error_message.startswith(reason.value)
    if evidence and state == Z:
        assert evidence in info.error_message


@pytest.mark.parametrize("code", [126, 127])
def test_a_command_that_cannot_run_says_retrying_cannot_help(code):
    message = exit_info_from_wrapper(code).error_message
    assert "retrying cannot help" in message
    assert ("not found" if code == 127 else "not executable") in message


def test_the_detail_and_raw_state_are_kept():
    info = exit_info_from_wrapper(3, raw_state="FAILED", detail="Slurm job 12")
    assert info.error_message.endswith("; Slurm job 12")
    assert info.record is not None
    assert info.record.raw_state == "FAILED"


def test_the_entry_point_is_this_installation_unless_configured(monkeypatch):
    monkeypatch.delenv(ENTRY_POINT_VARIABLE, raising=False)
    argv = entry_point_argv()
    assert argv[0].endswith("jobfleet-worker-node") or argv[:2] == [sys.executable, "-m"]
    monkeypatch.setenv(ENTRY_POINT_VARIABLE, "/shared/venv/bin/jobfleet-worker-node --quiet 'a b'")
    assert entry_point_argv() == ["/shared/venv/bin/jobfleet-worker-node", "--quiet", "a b"]


class _Mine(BaseClusterDistributor):
    cluster_type = "mine"

    def start(self): ...
    def stop(self): ...
    def get_queueing_errors(self, distributor_ids):
        return {}

    def get_submitted_or_running(self, distributor_ids):
        return set()

    def terminate_task_instances(self, distributor_ids): ...
    def submit_to_batch_distributor(self, command, name, requested_resources):
        return "1"

    def get_remote_exit_info(self, distributor_id):
        return RemoteExitInfo.unknown("?")


def test_the_base_builds_the_wrapper_command_as_argv(monkeypatch):
    monkeypatch.setenv(ENTRY_POINT_VARIABLE, "wrapper")
    mine = _Mine("c", host_url="file:///x y/channel")
    argv = mine.wrapper_argv(mine.build_worker_node_command(task_instance_id=7))
    assert argv == [
        "wrapper", "job", "--task-instance-id", "7",
        "--cluster", "mine", "--host-url", "file:///x y/channel",
    ]  # fmt: skip
    assert mine.worker_node_entry_point == "wrapper"


def test_the_host_url_falls_back_to_the_environment_and_is_required(monkeypatch):
    monkeypatch.setenv(HOST_URL_VARIABLE, "file:///from/env")
    assert _Mine("c").host_url == "file:///from/env"
    monkeypatch.delenv(HOST_URL_VARIABLE)
    with pytest.raises(BackendError, match=f"host_url=.*{HOST_URL_VARIABLE}"):
        _Mine("c").wrapper_argv("job --task-instance-id 1")


@pytest.mark.parametrize("length", [0, -1, True, 1.5, "3"])
def test_the_base_refuses_an_array_that_is_not_a_positive_count(length):
    with pytest.raises(ValueError, match="array_length"):
        BaseClusterDistributor.check_array_length(length)


def test_settings_default_to_the_settings_class():
    class WithSettings(_Mine):
        settings_class = dict

    assert WithSettings("c").settings == {}
    assert WithSettings("c", settings={"a": 1}).settings == {"a": 1}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_poller_backs_off_while_nothing_changes_and_hurries_after_a_change():
    clock = _Clock()
    poller = Poller(1.0, 8.0, 100, clock=clock)
    assert poller.due()
    intervals = []
    for _ in range(5):
        poller.count()
        poller.answered(changed=False)
        intervals.append(poller.interval)
    assert intervals == [2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 7.9
    assert not poller.due()
    clock.now += 0.1
    assert poller.due()
    poller.answered(changed=True)
    assert poller.interval == 1.0
    poller.interval = 8.0
    poller.hurry()
    assert poller.interval == 1.0


def test_the_poller_never_exceeds_its_rate_limit():
    clock = _Clock()
    poller = Poller(0.001, 0.001, 3, clock=clock)
    made = 0
    for _ in range(100):  # 100 rounds in 10 seconds
        clock.now += 0.1
        if poller.due():
            poller.count()
            poller.answered(changed=True)
            made += 1
    assert made == 3
    assert not poller.allowed()
    clock.now += 60.1
    assert poller.allowed()


@pytest.mark.parametrize(("low", "high", "rate"), [(0, 1, 1), (2, 1, 1), (1, 2, 0)])
def test_the_poller_refuses_nonsense(low, high, rate):
    with pytest.raises(ValueError, match="must be"):
        Poller(low, high, rate)


def test_signal_names_in_messages():
    assert "SIGSEGV" in exit_info_from_wrapper(128 + signal.SIGSEGV).error_message
    assert "SIGKILL" in exit_info_from_wrapper(-9).error_message


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (status_line(240), 240),
        ("noise\njobfleet-worker-node: exit status 137\nmore noise\n", 137),
        ("jobfleet-worker-node: exit status 130\njobfleet-worker-node: exit status 241", 241),
        ("jobfleet-worker-node: exit status 9999\n", None),
        ("jobfleet-worker-node: exit status x\n", None),
        ("", None),
    ],
)
def test_the_wrapper_states_its_whole_exit_status(text, status):
    assert status_from_output(text) == status
