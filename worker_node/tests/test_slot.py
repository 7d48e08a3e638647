"""`jobfleet-worker-node slot`: a real worker process, a real file channel, real tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.channel import EventKind, TaskSpec, open_channel
from jobfleet.core.wrapper import entry_point_argv
from jobfleet.worker_node.cgroup import current_memory_cgroup

MIB = 1024 * 1024


class SlotUnderTest:
    """A slot worker on a fresh file channel, driven the way `LocalDistributor` drives it."""

    def __init__(self, root: Path, *options: str) -> None:
        self.channel = open_channel(f"file://{root / 'channel'}", create=True)
        self.next_id = 1
        env = {**os.environ, "JOBFLEET_SLOT_WORKER": "test", "JOBFLEET_SLOT_WORK_DIR": str(root)}
        self.process = subprocess.Popen(
            [
                *entry_point_argv(),
                *("slot", "--cluster", "multiprocess", "--host-url", self.channel.url),
                *("--kill-grace", "1", *options),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def submit(self, command: str, **spec: Any) -> int:
        task_instance_id = self.next_id
        self.next_id += 1
        self.channel.put_spec(TaskSpec(task_instance_id, command, f"t{task_instance_id}", **spec))
        self.send(
            {
                "op": "run",
                "id": f"slot-{task_instance_id}",
                "step": None,
                "gpus": None,
                "args": ["job", "--task-instance-id", str(task_instance_id)],
            }
        )
        return task_instance_id

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def done(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the slot worker ended without answering"
        message: dict[str, Any] = json.loads(line)
        return message

    def run(self, command: str, **spec: Any) -> dict[str, Any]:
        """Run one task to its end; its final report."""
        task_instance_id = self.submit(command, **spec)
        answer = self.done()
        assert answer == {"op": "done", "id": f"slot-{task_instance_id}", "code": answer["code"]}
        return self.final(task_instance_id)

    def final(self, task_instance_id: int) -> dict[str, Any]:
        events, _ = self.channel.read_events(None)
        finals = [
            event.data
            for event in events
            if event.kind is EventKind.FINAL and event.task_instance_id == task_instance_id
        ]
        assert len(finals) == 1, finals
        return finals[0]

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[SlotUnderTest]:
    worker = SlotUnderTest(tmp_path)
    yield worker
    if worker.process.poll() is None:
        worker.close()


def test_many_tasks_in_one_worker_each_report_their_own_end(slot: SlotUnderTest) -> None:
    pid = slot.process.pid
    for n in range(20):
        final = slot.run(f"echo out{n}; echo err{n} >&2; exit {n % 3}")
        assert final["exit"]["exit_code"] == n % 3
        assert final["error_state"] == ("D" if n % 3 == 0 else "E"), final["message"]
        assert final["stdout_tail"] == f"out{n}\n"
        assert final["stderr_tail"] == f"err{n}\n"
        assert final["distributor_id"] == f"slot-{n + 1}"
    assert slot.process.pid == pid
    assert slot.process.poll() is None
    assert slot.close() == 0


def test_array_steps_are_read_from_each_request(slot: SlotUnderTest) -> None:
    first = slot.next_id
    for offset in range(3):
        spec = TaskSpec(first + offset, "echo $JOBFLEET_ARRAY_STEP_ID", f"step{offset}")
        slot.channel.put_spec(spec)
    slot.next_id += 3
    slot.channel.put_array(1, 0, {step: first + step for step in range(3)})
    for step in (2, 0, 1):
        slot.send(
            {
                "op": "run",
                "id": f"array-{step}",
                "step": step,
                "gpus": None,
                "args": ["array", "--array-id", "1", "--batch-number", "0"],
            }
        )
        assert slot.done() == {"op": "done", "id": f"array-{step}", "code": 0}
        final = slot.final(first + step)
        assert final["stdout_tail"] == f"{step}\n"
        assert final["distributor_id"] == f"array-{step}"


def test_true_reports_no_fork_floor(slot: SlotUnderTest) -> None:
    final = slot.run("true")
    assert final["error_state"] == "D", final["message"]
    assert 0 < final["usage"]["maxrss"] <= 5 * MIB, final["usage"]


def test_true_in_a_cgroup_reports_no_fork_floor(tmp_path: Path) -> None:
    if current_memory_cgroup() is None:
        pytest.skip("no memory cgroup controller on this machine")
    worker = SlotUnderTest(tmp_path, "--cgroup", "always")
    try:
        final = worker.run("true")
        assert final["error_state"] == "D", final["message"]
        usage_str = json.loads(final["usage"]["usage_str"])
        if usage_str["maxrss_source"] != "cgroup":
            pytest.skip(f"no task cgroup could be made here: {usage_str['task_cgroup']}")
        assert 0 < final["usage"]["maxrss"] <= 5 * MIB, final["usage"]
    finally:
        worker.close()


def test_a_task_uses_what_it_uses(slot: SlotUnderTest) -> None:
    final = slot.run("python3 -c 'x = bytearray(64 * 2**20); x[::4096] = b\"x\" * len(x[::4096])'")
    assert final["error_state"] == "D", final["message"]
    assert 64 * MIB < final["usage"]["maxrss"] < 100 * MIB


def test_a_killed_task_reports_k_and_the_worker_runs_the_next(slot: SlotUnderTest) -> None:
    marker = slot.channel.url.removeprefix("file://") + "-started"
    task_instance_id = slot.submit(f"touch {marker}; exec sleep 60")
    while not os.path.exists(marker):
        os.sched_yield()
    slot.send({"op": "kill", "id": f"slot-{task_instance_id}"})
    assert slot.done()["code"] == 128 + signal.SIGTERM
    final = slot.final(task_instance_id)
    assert final["error_state"] == "K", final["message"]
    assert slot.run("echo again")["stdout_tail"] == "again\n"


def test_a_kill_for_another_task_is_ignored(slot: SlotUnderTest) -> None:
    slot.send({"op": "kill", "id": "slot-99"})
    assert slot.run("echo fine")["error_state"] == "D"


def test_hostile_commands_names_and_environments_are_never_code(slot: SlotUnderTest) -> None:
    hostile = "a'b\"c $(touch pwned) `touch pwned` ;\nnewline \\ $HOME"
    final = slot.run('printf "%s|" "$HOSTILE" "$1"', environment={"HOSTILE": hostile})
    assert final["stdout_tail"] == f"{hostile}||"
    final = slot.run("printf '%s' \"it's \\$(not) run\"; echo")
    assert final["stdout_tail"] == "it's $(not) run\n"
    assert not Path("pwned").exists()
    assert not (Path(slot.channel.url.removeprefix("file://")).parent / "pwned").exists()


def test_each_task_gets_its_own_environment_only(slot: SlotUnderTest) -> None:
    first = slot.run("echo ${ONLY_FIRST-unset}", environment={"ONLY_FIRST": "here"})
    second = slot.run(
        "echo ${ONLY_FIRST-unset} $JOBFLEET_DISTRIBUTOR_ID $JOBFLEET_TASK_INSTANCE_ID"
    )
    assert first["stdout_tail"] == "here\n"
    assert second["stdout_tail"] == "unset slot-2 2\n"
    markers = slot.run("env")["stdout_tail"]
    assert "JOBFLEET_SLOT_WORKER" not in markers
    assert "JOBFLEET_SLOT_WORK_DIR" not in markers


def test_signals_start_at_their_defaults(slot: SlotUnderTest) -> None:
    # A shell's background job starts with SIGINT ignored: the fork server must not pass that on.
    final = slot.run("kill -INT $$; echo survived")
    assert final["exit"]["signal"] == signal.SIGINT, final["message"]


def test_no_signal_starts_ignored(slot: SlotUnderTest) -> None:
    final = slot.run("grep SigIgn /proc/$$/status")
    assert final["stdout_tail"].split() == ["SigIgn:", "0" * 16], final["stdout_tail"]


def test_the_task_leads_a_session_and_group_of_its_own(slot: SlotUnderTest) -> None:
    # Fields after the command name in /proc/PID/stat: state ppid pgrp session.
    final = slot.run("echo $$; cut -d')' -f2 /proc/$$/stat")
    pid, stat = final["stdout_tail"].splitlines()
    _state, _ppid, group, session = stat.split()[:4]
    assert group == session == pid


def test_names_a_shell_cannot_export_still_reach_the_task(slot: SlotUnderTest) -> None:
    # Set by `env -i` rather than by `export` in the launch file: still each as given, alone.
    # Read from the environment the task's shell was started with (dash passes no odd names on).
    odd = {"odd-name": "1", "OPTIND": "3", "PLAIN": "$(touch pwned)"}
    show = "tr '\\0' '\\n' </proc/$$/environ"
    lines = slot.run(show, environment=odd)["stdout_tail"].splitlines()
    assert {"odd-name=1", "OPTIND=3", "PLAIN=$(touch pwned)"} <= set(lines), lines
    assert not Path("pwned").exists()
    plain = slot.run(show)["stdout_tail"].splitlines()
    assert "PLAIN=$(touch pwned)" not in plain
    assert not [line for line in plain if line.startswith(("odd-name=", "OPTIND="))], plain


def test_what_a_task_leaves_behind_is_ended_before_done(slot: SlotUnderTest) -> None:
    final = slot.run("setsid sleep 300 & (sleep 300 &) ; echo $!")
    assert final["error_state"] == "D", final["message"]
    left = int(final["stdout_tail"])
    assert not os.path.exists(f"/proc/{left}") or _zombie(left)
    assert slot.run("echo next")["error_state"] == "D"


def test_end_of_input_lets_the_running_task_finish_and_report(slot: SlotUnderTest) -> None:
    marker = slot.channel.url.removeprefix("file://") + "-running"
    task_instance_id = slot.submit(f"touch {marker}; sleep 0.5; echo finished")
    while not os.path.exists(marker):
        os.sched_yield()
    assert slot.close() == 0
    final = slot.final(task_instance_id)
    assert final["error_state"] == "D"
    assert final["stdout_tail"] == "finished\n"


def test_a_task_not_started_before_end_of_input_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    worker = SlotUnderTest(tmp_path)
    # Sent and closed at once: the worker is still starting, so the request is read after its
    # distributor is gone (as when a host dies right after sending it).
    task_instance_id = worker.submit(f"touch {marker}")
    assert worker.close() == 0
    assert not marker.exists()
    events, _ = worker.channel.read_events(None)
    assert [e for e in events if e.task_instance_id == task_instance_id] == []


def test_sigterm_stops_the_running_task_reports_k_and_ends_the_worker(slot: SlotUnderTest) -> None:
    marker = slot.channel.url.removeprefix("file://") + "-up"
    task_instance_id = slot.submit(f"touch {marker}; exec sleep 60")
    while not os.path.exists(marker):
        os.sched_yield()
    slot.process.send_signal(signal.SIGTERM)
    assert slot.done()["code"] == 128 + signal.SIGTERM
    assert slot.process.wait(timeout=30) == 0
    assert slot.final(task_instance_id)["error_state"] == "K"


def test_worker_memory_stays_flat_over_many_tasks(slot: SlotUnderTest) -> None:
    def run_true(times: int) -> None:
        for _ in range(times):
            slot.submit("true")
            assert slot.done()["code"] == 0

    run_true(50)  # warm up: imports, caches, the first allocations
    before = slot.rss()
    run_true(400)
    after = slot.rss()
    assert after <= before * 1.10, f"RSS grew from {before} to {after} bytes over 400 tasks"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


LAUNCH_FAILS_THEN_WORKS = """
import os, sys
from jobfleet.core import process_tree
from jobfleet.worker_node.forkserver import ForkServer, ForkServerError
assert process_tree.become_subreaper()
server = ForkServer()
scratch = sys.argv[1]
bad = os.path.join(scratch, "bad")
with open(bad, "w") as handle:  # a log in a directory that does not exist: nothing starts
    handle.write(server.launch_script("true", {}, "/nonexistent/dir/out", "/dev/null", None))
try:
    server.launch(bad)
except ForkServerError as exc:
    print("refused:", exc)
good = os.path.join(scratch, "good")
with open(good, "w") as handle:
    handle.write(server.launch_script("exit 7", {"A": "1"}, "/dev/null", "/dev/null", None))
pid = server.launch(good)
_, status, _ = os.wait4(pid, 0)
print("dead:", server.dead, "code:", os.waitstatus_to_exitcode(status))
server.close()
"""


def test_a_launch_that_starts_nothing_is_refused_and_the_server_goes_on(tmp_path: Path) -> None:
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH_FAILS_THEN_WORKS)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    refused, outcome = result.stdout.splitlines()
    assert refused.startswith("refused: the task could not be started"), refused
    assert outcome == "dead: False code: 7"
