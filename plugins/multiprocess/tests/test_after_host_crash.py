"""After a host crash: a new distributor answers for, and kills, what the crashed one started.

The crashed host is a real process: a child Python that makes a distributor with a file channel,
submits tasks, prints their ids and waits until the test SIGKILLs it. Its wrappers live on
(sessions of their own, re-parented to init), as they would after a real crash; the test then
plays the restarted host, with a new distributor and the same channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobfleet.core import process_tree
from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.local import distributor as distributor_module
from jobfleet.core.testing import KitHost, Submitted
from jobfleet.core.testing.host import is_locked, wait_for
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

TAG = "JOBFLEET_DISTRIBUTOR_ID"
KILL_GRACE = 1.0
"""The crashed host's grace period, which its wrappers keep."""
PATIENCE = 10.0
"""The restarted host's grace period: a kill never waits for it when the wrappers do their
job, and a slow machine cannot make the wrapper miss its report by being SIGKILLed early."""

# The host that crashes: argv ROOT COMMANDS CORES. Prints {"workdir", "jobs": [[ti, id], …]}
# once everything is submitted, then waits to be killed.
CRASHING_HOST = """\
import json, sys
from pathlib import Path
from jobfleet.core.testing.host import KitHost
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

root, commands, cores = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
host = KitHost(root)
settings = MultiprocessSettings(cores=cores, memory="4G", kill_grace=float(sys.argv[4]))
distributor = MultiprocessDistributor("before-the-crash", host_url=host.url, settings=settings)
distributor.start()
jobs = [host.submit(distributor, command) for command in commands]
ids = [[job.task_instance_id, job.distributor_id] for job in jobs]
print(json.dumps({"workdir": str(distributor._workdir), "jobs": ids}), flush=True)
sys.stdin.read()
"""

# One process of a task: argv LOCK RELEASE [new-session]. It holds LOCK until RELEASE exists,
# so the test sees from outside whether it lives and decides when it ends.
HOLDER = """\
import fcntl, os, sys, time
lock, release = sys.argv[1], sys.argv[2]
if sys.argv[3:] == ["new-session"]:
    os.setsid()
with open(lock, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    while not os.path.exists(release):
        time.sleep(0.02)
"""


class Task:
    """A task of two lock holders, one of which left for a session of its own."""

    def __init__(self, directory: Path, name: str) -> None:
        self.locks = (directory / f"{name}.lock", directory / f"{name}.escaped.lock")
        self.release = directory / f"{name}.release"
        holder = directory / "holder.py"
        holder.write_text(HOLDER)
        run = shlex.join([sys.executable, str(holder)])
        escaped = f"{run} {shlex.quote(str(self.locks[1]))} {shlex.quote(str(self.release))}"
        own = f"{run} {shlex.quote(str(self.locks[0]))} {shlex.quote(str(self.release))}"
        self.command = f"{escaped} new-session & {own}; wait"

    def holds(self) -> bool:
        return all(is_locked(lock) for lock in self.locks)

    def alive(self) -> list[Path]:
        return [lock for lock in self.locks if is_locked(lock)]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[KitHost]:
    """The restarted host's view of the channel the crashed host made."""
    kit_host = KitHost(tmp_path / "host")
    yield kit_host
    kit_host.close()


@pytest.fixture
def crash(tmp_path: Path, host: KitHost) -> Iterator[Callable[..., list[Submitted]]]:
    """Start a host that submits `commands`, wait until the first `cores` run, SIGKILL it.

    Whatever it started is killed at the end of the test, whatever happened.
    """
    children: list[subprocess.Popen[str]] = []
    ids: list[str] = []
    workdirs: list[Path] = []

    def crash_after_submitting(commands: list[str], cores: int | None = None) -> list[Submitted]:
        cores = cores or len(commands)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CRASHING_HOST,
                str(host.root),
                json.dumps(commands),
                str(cores),
                str(KILL_GRACE),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout is not None
        said = json.loads(child.stdout.readline())
        workdirs.append(Path(said["workdir"]))
        jobs = [Submitted(ti, distributor_id) for ti, distributor_id in said["jobs"]]
        ids.extend(job.distributor_id for job in jobs)
        for job in jobs[:cores]:
            host.wait_report(RunningReport, job.task_instance_id)
        child.kill()  # SIGKILL: the host crashes
        child.wait()
        return jobs

    try:
        yield crash_after_submitting
    finally:
        for child in children:
            child.kill()
            child.wait()
        while found := process_tree.pids_by_tag(TAG, ids):
            process_tree.kill_pids([pid for pids in found.values() for pid in pids])
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def restarted_distributor(
    host: KitHost, kill_grace: float = PATIENCE
) -> Iterator[MultiprocessDistributor]:
    """The restarted host's distributor: a new instance, with an id prefix of its own."""
    distributor = MultiprocessDistributor(
        "after-the-crash",
        host_url=host.url,
        settings=MultiprocessSettings(cores=2, memory="4G", kill_grace=kill_grace),
    )
    distributor.start()
    try:
        yield distributor
    finally:
        distributor.stop()


@pytest.fixture
def restarted(host: KitHost) -> Iterator[MultiprocessDistributor]:
    with restarted_distributor(host) as distributor:
        yield distributor


def no_process_of(distributor_id: str) -> bool:
    return not process_tree.pids_tagged(TAG, distributor_id)


def test_an_instance_of_the_crashed_host_runs_on_and_is_reported_running(
    tmp_path, host, crash, restarted
):
    task = Task(tmp_path, "task")
    [job] = crash([task.command])
    wait_for(task.holds, "the task to hold its locks")
    assert not job.distributor_id.startswith(restarted._prefix)

    assert restarted.get_submitted_or_running([job.distributor_id]) == {job.distributor_id}
    info = restarted.get_remote_exit_info(job.distributor_id)
    assert info.error_state is ErrorState.UNKNOWN_ERROR
    assert not info.finalized
    assert "still running" in info.error_message
    assert task.holds()


def test_when_it_ends_its_own_report_is_on_the_channel_and_it_is_no_longer_running(
    tmp_path, host, crash, restarted
):
    task = Task(tmp_path, "task")
    [job] = crash([task.command])
    assert restarted.get_submitted_or_running([job.distributor_id]) == {job.distributor_id}

    task.release.touch()
    wait_for(
        lambda: not restarted.get_submitted_or_running([job.distributor_id]),
        "the adopted instance to end",
    )
    # The wrapper sends its final report before it exits: not running means reported.
    [final] = host.final_reports()[job.task_instance_id]
    assert final.error_state == "D"
    assert final.distributor_id == job.distributor_id
    info = restarted.get_remote_exit_info(job.distributor_id)
    assert info.finalized
    assert info.error_state is ErrorState.UNKNOWN_ERROR
    assert "no process of it is left" in info.error_message
    assert task.alive() == []


def test_killing_an_adopted_instance_ends_its_whole_tree_and_its_wrapper_reports_k(
    tmp_path, host, crash, restarted
):
    task = Task(tmp_path, "task")
    [job] = crash([task.command])
    wait_for(task.holds, "the task to hold its locks")

    restarted.terminate_task_instances([job.distributor_id])
    # No waiting: terminate_task_instances returns once nothing of the instance runs.
    assert task.alive() == []
    assert no_process_of(job.distributor_id)
    # SIGTERM went to the wrapper, which stopped its task (the escaped holder too) and
    # reported the kill itself, as it does when its own host kills it.
    [final] = host.final_reports()[job.task_instance_id]
    assert final.error_state == "K"
    assert final.exit.reason == "cancelled"
    assert "SIGTERM" in final.message
    assert restarted.get_submitted_or_running([job.distributor_id]) == set()
    info = restarted.get_remote_exit_info(job.distributor_id)
    assert info.error_state is ErrorState.KILL_SELF
    assert info.finalized


def test_without_its_wrapper_an_adopted_task_is_still_killed_and_reported_k(tmp_path, host, crash):
    task = Task(tmp_path, "task")
    [job] = crash([task.command])
    wait_for(task.holds, "the task to hold its locks")
    wrapper = host.wait_report(RunningReport, job.task_instance_id).wrapper_pid
    os.kill(wrapper, signal.SIGKILL)
    wait_for(
        lambda: wrapper not in process_tree.pids_tagged(TAG, job.distributor_id),
        "the wrapper to be gone",
    )

    with restarted_distributor(host, kill_grace=0.5) as restarted:
        # The task, orphaned twice, still carries the tag: it runs, so the instance runs.
        assert restarted.get_submitted_or_running([job.distributor_id]) == {job.distributor_id}
        # SIGTERM reaches the task's shell and the escaped holder (orphans now, so topmost),
        # not the holder below the shell: that one is SIGKILLed after the grace period.
        restarted.terminate_task_instances([job.distributor_id])
        assert task.alive() == []
        assert no_process_of(job.distributor_id)
        assert job.task_instance_id not in host.final_reports()  # nobody was left to report
        info = restarted.get_remote_exit_info(job.distributor_id)
        assert info.error_state is ErrorState.KILL_SELF
        assert info.finalized


def test_an_instance_still_queued_in_the_crashed_host_never_started(
    tmp_path, host, crash, restarted
):
    running, queued = Task(tmp_path, "running"), Task(tmp_path, "queued")
    first, second = crash([running.command, queued.command], cores=1)

    ids = [first.distributor_id, second.distributor_id]
    assert restarted.get_submitted_or_running(ids) == {first.distributor_id}
    info = restarted.get_remote_exit_info(second.distributor_id)
    assert info.error_state is ErrorState.UNKNOWN_ERROR
    assert info.finalized
    assert "no process of it is left" in info.error_message
    restarted.terminate_task_instances(ids)
    assert running.alive() == []
    assert second.task_instance_id not in host.started()
    assert [final.error_state for final in host.final_reports()[first.task_instance_id]] == ["K"]


def test_stop_ends_the_adopted_instances_too(tmp_path, host, crash, restarted):
    task = Task(tmp_path, "task")
    [job] = crash([task.command])
    wait_for(task.holds, "the task to hold its locks")
    assert restarted.get_submitted_or_running([job.distributor_id]) == {job.distributor_id}

    restarted.stop()
    assert task.alive() == []
    assert [final.error_state for final in host.final_reports()[job.task_instance_id]] == ["K"]


def test_an_id_of_another_prefix_that_never_existed(restarted):
    prefix = restarted._prefix
    other = next(p for p in (uuid.uuid4().hex[:8] for _ in range(10)) if p != prefix)
    never = f"{other}-1"

    assert restarted.get_submitted_or_running([never]) == set()
    restarted.terminate_task_instances([never])  # killing an unknown id is not an error
    info = restarted.get_remote_exit_info(never)
    assert info.error_state is ErrorState.UNKNOWN_ERROR
    assert info.finalized
    assert info.error_message.startswith(
        "not started by this distributor, and no process of it is left"
    )


@pytest.fixture
def scans(monkeypatch) -> list[list[str]]:
    """The values of every scan of /proc the distributor asks for."""
    asked: list[list[str]] = []
    real = process_tree.pids_by_tag

    def counting(variable: str, values) -> dict[str, list[int]]:
        asked.append(list(values))
        return real(variable, values)

    monkeypatch.setattr(distributor_module.process_tree, "pids_by_tag", counting)
    return asked


def test_unknown_ids_of_its_own_prefix_and_odd_strings_are_not_looked_for(restarted, scans):
    own = f"{restarted._prefix}-999"
    odd = [
        own,
        "",
        "jobfleet-no-such-id",
        "ABCDEF12-1",
        "abcdef12-",
        "abcdef12-1; touch /tmp/pwned",
        "../abcdef12-1",
        "abcdef12-\u0661",  # an Arabic-Indic digit: \d would take it, ids do not
    ]
    assert restarted.get_submitted_or_running(odd) == set()
    restarted.terminate_task_instances(odd)
    for distributor_id in odd:
        info = restarted.get_remote_exit_info(distributor_id)
        assert info.error_state is ErrorState.UNKNOWN_ERROR
        assert "never ran" in info.error_message
    assert scans == []


def test_each_call_scans_proc_once_however_many_ids(tmp_path, host, restarted, scans):
    known = host.submit(restarted, "true").distributor_id
    foreign = [f"abcdef12-{n}" for n in range(50)]
    if restarted._prefix == "abcdef12":
        foreign = [f"12345678-{n}" for n in range(50)]

    restarted.get_submitted_or_running([known, *foreign, *foreign])
    assert scans == [foreign]  # once each, and the known id is not looked for
    scans.clear()
    restarted.get_remote_exit_info(foreign[0])
    assert scans == [[foreign[0]]]
    scans.clear()
    restarted.terminate_task_instances(foreign)  # no process: nothing to wait for
    assert scans == [foreign]


def test_a_restarted_host_removes_the_crashed_ones_work_directory_and_no_live_one(
    tmp_path, host, crash, monkeypatch
):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the crashing host's temp dir, and this one's
    monkeypatch.setattr(tempfile, "tempdir", None)
    with restarted_distributor(host) as live:
        assert live._workdir is not None
        assert live._workdir.parent == temp
        [job] = crash(["true"])
        (dead,) = [path for path in temp.iterdir() if path != live._workdir]
        # Its slot worker holds the crashed host's lock until its task has reported.
        host.wait_report(FinalReport, job.task_instance_id)
        wait_for(lambda: not is_locked(dead / "lock"), "the crashed host's workers to leave")
        with restarted_distributor(host) as restarted:
            assert restarted._workdir is not None
            assert sorted(temp.iterdir()) == sorted([live._workdir, restarted._workdir])
        assert not dead.exists()
        assert live._workdir.is_dir()  # its owner lives
