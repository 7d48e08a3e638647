"""The pack worker (`array … --pack K`) as a process of its own, on a file channel, with the
Slurm worker node's environment and no Slurm: members in turn, each its own reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobfleet.core.channel import (
    EventKind,
    FileChannel,
    FinalReport,
    RunningReport,
    TaskSpec,
)
from jobfleet.core.testing.host import wait_for

WORKER = [sys.executable, "-m", "jobfleet.worker_node.cli"]


def start(tmp_path: Path, commands: list[str], element: int, pack: int) -> tuple:
    channel = FileChannel.create(tmp_path / "channel")
    specs = {
        step: TaskSpec(task_instance_id=step + 1, command=command, name=f"member-{step}")
        for step, command in enumerate(commands)
    }
    channel.put_array_specs(3, 0, specs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBFLEET_", "SLURM_"))}
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID=str(element), SLURM_JOB_ID="78")
    argv = [
        *WORKER, "array", "--array-id", "3", "--batch-number", "0", "--pack", str(pack),
        "--array-length", str(len(commands)), "--cluster", "slurm", "--host-url", channel.url,
    ]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    return channel, process


def reports(channel: FileChannel) -> dict[int, list]:
    found: dict[int, list] = {}
    events, _ = channel.read_events()
    for event in events:
        if event.kind in (EventKind.RUNNING, EventKind.FINAL):
            found.setdefault(event.task_instance_id, []).append(event.report)
    return found


def wait_running(channel: FileChannel, tid: int, process: subprocess.Popen) -> None:
    def running() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        return any(isinstance(r, RunningReport) for r in reports(channel).get(tid, []))

    wait_for(running, f"the running report of task instance {tid}")


def test_an_element_runs_its_members_in_turn_each_with_its_own_outcome(tmp_path) -> None:
    commands = ["echo zero", "exit 3", "echo two", "echo three", "echo four"]
    channel, process = start(tmp_path, commands, element=1, pack=2)  # steps 2 and 3
    assert process.wait(timeout=60) == 0, process.stderr.read()
    seen = reports(channel)
    assert sorted(seen) == [3, 4]  # task instances of steps 2 and 3 only
    for tid in (3, 4):
        running, final = seen[tid]
        assert running.distributor_id == f"77_1+3.0.{tid - 1}"
        assert isinstance(final, FinalReport)
        assert final.error_state == "D"
    assert not channel.member_running("3.0.2")  # unmarked once reported


def test_a_failing_member_does_not_stop_the_next(tmp_path) -> None:
    channel, process = start(tmp_path, ["exit 3", "echo after"], element=0, pack=2)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    seen = reports(channel)
    assert [seen[tid][-1].error_state for tid in (1, 2)] == ["E", "D"]


def test_a_stopped_element_reports_its_running_member_and_leaves_the_rest(tmp_path) -> None:
    channel, process = start(tmp_path, ["echo one", "sleep 600", "echo three"], 0, pack=3)
    wait_running(channel, 2, process)
    process.send_signal(signal.SIGTERM)  # what scancel does to the job
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    seen = reports(channel)
    assert seen[1][-1].error_state == "D"
    assert seen[2][-1].error_state == "K"
    assert 3 not in seen  # never started, never reported: the host retries it (U)


@pytest.mark.parametrize("running", [False, True])
def test_a_host_kill_stops_or_skips_only_its_member(tmp_path, running: bool) -> None:
    commands = ["sleep 600", "echo after"] if running else ["sleep 600", "echo skipped", "echo ok"]
    channel, process = start(tmp_path, commands, element=0, pack=len(commands))
    wait_running(channel, 1, process)
    if running:
        channel.request_member_kill("3.0.0")
    else:
        channel.request_member_kill("3.0.1")
        channel.request_member_kill("3.0.0")
    assert process.wait(timeout=60) == 0, process.stderr.read()
    seen = reports(channel)
    assert seen[1][-1].error_state == "K"
    if running:
        assert seen[2][-1].error_state == "D"
    else:
        assert 2 not in seen  # skipped: the host ends it K itself
        assert seen[3][-1].error_state == "D"
