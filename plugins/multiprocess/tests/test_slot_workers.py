"""The multiprocess distributor's slot workers: reuse, a worker that dies, nothing left at stop.

The conformance kit runs the whole contract with slot workers on and off
(`test_conformance.py`); these are what only slot workers have.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobfleet.core import process_tree
from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.testing import KitHost
from jobfleet.core.testing.host import wait_for
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

TAG = "JOBFLEET_DISTRIBUTOR_ID"


@pytest.fixture
def slot_host(tmp_path: Path) -> Iterator[KitHost]:
    kit_host = KitHost(tmp_path / "host")
    yield kit_host
    kit_host.close()


@pytest.fixture
def two_slots(slot_host: KitHost) -> Iterator[MultiprocessDistributor]:
    distributor = MultiprocessDistributor(
        "slots", host_url=slot_host.url, settings=MultiprocessSettings(cores=2, kill_grace=1)
    )
    distributor.start()
    yield distributor
    distributor.stop()


def test_workers_are_reused_task_after_task(
    slot_host: KitHost, two_slots: MultiprocessDistributor
) -> None:
    jobs = [slot_host.submit(two_slots, f"echo {n}") for n in range(12)]
    wrappers = {
        slot_host.wait_report(RunningReport, job.task_instance_id).wrapper_pid for job in jobs
    }
    for job in jobs:
        assert slot_host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
    # At most one worker per instance running at once, and the pool has two cores.
    assert 1 <= len(wrappers) <= 2, wrappers


def test_a_worker_that_dies_is_replaced_and_its_instance_is_not_lost(
    slot_host: KitHost, two_slots: MultiprocessDistributor
) -> None:
    doomed = slot_host.submit(two_slots, "sleep 300 & sleep 300")
    worker = slot_host.wait_report(RunningReport, doomed.task_instance_id).wrapper_pid
    wait_for(lambda: process_tree.pids_tagged(TAG, doomed.distributor_id), "the task to start")
    os.kill(worker, signal.SIGKILL)
    info = wait_for(
        lambda: (i := two_slots.get_remote_exit_info(doomed.distributor_id)).finalized and i,
        "the dead worker's instance to end",
    )
    assert info.error_state is ErrorState.UNKNOWN_ERROR, info.error_message
    assert "SIGKILL" in info.error_message or "signal 9" in info.error_message, info.error_message
    assert two_slots.get_submitted_or_running([doomed.distributor_id]) == set()
    assert not process_tree.pids_tagged(TAG, doomed.distributor_id)  # its tree went with it
    after = [slot_host.submit(two_slots, "echo after") for _ in range(3)]
    for job in after:
        final = slot_host.wait_report(FinalReport, job.task_instance_id)
        assert final.error_state == "D", final.message
        assert slot_host.wait_report(RunningReport, job.task_instance_id).wrapper_pid != worker


def test_killing_a_running_instance_spares_its_worker(
    slot_host: KitHost, two_slots: MultiprocessDistributor
) -> None:
    job = slot_host.submit(two_slots, "sleep 300")
    worker = slot_host.wait_report(RunningReport, job.task_instance_id).wrapper_pid
    two_slots.terminate_task_instances([job.distributor_id])
    assert slot_host.wait_report(FinalReport, job.task_instance_id).error_state == "K"
    assert not process_tree.pids_tagged(TAG, job.distributor_id)
    assert os.path.exists(f"/proc/{worker}")  # the worker lives on, idle
    again = slot_host.submit(two_slots, "echo again")
    assert slot_host.wait_report(FinalReport, again.task_instance_id).error_state == "D"


def test_stop_leaves_no_worker_behind(slot_host: KitHost) -> None:
    distributor = MultiprocessDistributor(
        "slots", host_url=slot_host.url, settings=MultiprocessSettings(cores=2, kill_grace=1)
    )
    distributor.start()
    jobs = [slot_host.submit(distributor, "echo x") for _ in range(4)]
    jobs.append(slot_host.submit(distributor, "sleep 300"))
    running = slot_host.wait_report(RunningReport, jobs[-1].task_instance_id)
    workers = {
        slot_host.wait_report(RunningReport, job.task_instance_id).wrapper_pid for job in jobs
    }
    workdir = distributor._workdir
    distributor.stop()
    assert [pid for pid in workers if os.path.exists(f"/proc/{pid}")] == []
    assert not process_tree.pids_tagged(TAG, jobs[-1].distributor_id)
    assert running.pid is not None
    assert not os.path.exists(f"/proc/{running.pid}")
    assert workdir is not None
    assert not workdir.exists()


def test_a_machine_without_the_fork_servers_tools_gets_one_shot_wrappers(
    slot_host: KitHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from jobfleet.core.local import slots

    # A setsid from before util-linux 2.35: no --fork.
    old_tools = tmp_path / "old-tools"
    old_tools.mkdir()
    fake = old_tools / "setsid"
    fake.write_text("#!/bin/sh\necho 'Usage: setsid [options] <program> [arguments ...]'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old_tools}{os.pathsep}{os.environ['PATH']}")
    slots.fork_server_tools_missing.cache_clear()
    distributor = MultiprocessDistributor(
        "old", host_url=slot_host.url, settings=MultiprocessSettings(cores=2, kill_grace=1)
    )
    distributor.start()
    try:
        jobs = [slot_host.submit(distributor, f"echo {n}") for n in range(3)]
        for job in jobs:
            assert slot_host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
        wrappers = {
            slot_host.wait_report(RunningReport, job.task_instance_id).wrapper_pid for job in jobs
        }
        assert len(wrappers) == 3, "one wrapper per instance, not one slot worker"
    finally:
        distributor.stop()
        slots.fork_server_tools_missing.cache_clear()
    err = capfd.readouterr().err
    assert "slot workers are off on this machine" in err
    assert "has no --fork option" in err
