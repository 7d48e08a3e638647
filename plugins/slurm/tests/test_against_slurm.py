"""The Slurm backend's own promises, against the real Slurm of conftest.py.

Through the distributor: exit info from sacct (out of memory, a cancel behind jobfleet's
back, a job gone from squeue never taken for done), and the number of Slurm calls per round.
Through `jobfleet run`: a single job, a 100-task array in one sbatch, and a task over its
memory retried with more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.exit_info import ErrorState, RemoteExitInfo
from jobfleet.core.resources import memory_text
from jobfleet.core.testing.host import KitHost, wait_for
from jobfleet.plugins.slurm.commands import SlurmCommandError, SlurmCommands
from jobfleet.plugins.slurm.distributor import SlurmDistributor
from jobfleet.plugins.slurm.settings import SlurmSettings

FAST = SlurmSettings(poll_min=0.2, poll_max=1.0, max_queries_per_minute=6000)
LONG = "sleep 300"


@pytest.fixture
def kit_host(tmp_path: Path) -> Iterator[KitHost]:
    host = KitHost(tmp_path / "kit")
    yield host
    host.close()


@pytest.fixture
def commands(slurm_cluster: Any) -> SlurmCommands:
    return SlurmCommands()


def new_distributor(
    kit_host: KitHost, commands: SlurmCommands, settings: SlurmSettings = FAST
) -> SlurmDistributor:
    distributor = SlurmDistributor(
        "slurm", settings=settings, host_url=kit_host.url, commands=commands
    )
    distributor.start()
    return distributor


@pytest.fixture
def distributor(kit_host: KitHost, commands: SlurmCommands) -> Iterator[SlurmDistributor]:
    started = new_distributor(kit_host, commands)
    yield started
    started.stop()


def final_info(distributor: SlurmDistributor, job: str, timeout: float = 120) -> RemoteExitInfo:
    """Round after round, as the host asks: still there? if not, how did it end?"""

    def answer() -> RemoteExitInfo | None:
        if distributor.get_submitted_or_running([job]):
            return None
        info = distributor.get_remote_exit_info(job)
        return info if info.finalized else None

    return wait_for(answer, f"sacct's final record of job {job}", timeout=timeout)


# --- exit info from accounting -----------------------------------------------------------------


def test_over_its_mem_a_job_ends_out_of_memory_as_z(
    distributor: SlurmDistributor, kit_host: KitHost
) -> None:
    # No memory limit in the spec: only Slurm's --mem (its cgroup) stops the task, and the
    # wrapper dies with it, so the outcome can only come from sacct.
    hog = "python3 -c \"b = bytearray(400 << 20); b[::4096] = b'x' * len(b[::4096])\""
    job = kit_host.submit(distributor, hog, resources={"memory": "100M", "cores": 1})
    info = final_info(distributor, job.distributor_id)
    assert info.error_state is ErrorState.RESOURCE_ERROR, info.error_message
    assert info.record is not None
    assert (info.record.reason.value, info.record.raw_state) == ("oom", "OUT_OF_MEMORY")


def test_a_cancel_behind_jobfleets_back_is_fatal_and_says_who(
    distributor: SlurmDistributor, kit_host: KitHost, slurm_cluster: Any
) -> None:
    job = kit_host.submit(distributor, LONG, resources={"cores": 1})
    kit_host.wait_report(RunningReport, job.task_instance_id)
    subprocess.run(["scancel", job.distributor_id], check=True)  # an admin's cancel
    info = final_info(distributor, job.distributor_id)
    assert info.error_state is ErrorState.ERROR_FATAL, info.error_message
    assert "cancelled by user id 0" in info.error_message
    # And what jobfleet cancels itself is K.
    ours = kit_host.submit(distributor, LONG, resources={"cores": 1})
    kit_host.wait_report(RunningReport, ours.task_instance_id)
    distributor.terminate_task_instances([ours.distributor_id])
    assert final_info(distributor, ours.distributor_id).error_state is ErrorState.KILL_SELF


class LaggingAccounting(SlurmCommands):
    """sacct that has no record yet (accounting lag), however long one waits."""

    def run(self, argv: Any, *, check: bool = True) -> str:
        if argv[0] == "sacct":
            self.calls["sacct"] += 1
            return ""
        return super().run(argv, check=check)


def test_a_job_gone_from_squeue_is_never_done_without_sacct(kit_host: KitHost) -> None:
    lagging = new_distributor(kit_host, LaggingAccounting())
    try:
        job = kit_host.submit(lagging, "true", resources={"cores": 1})
        kit_host.wait_report(FinalReport, job.task_instance_id)  # it ran and its wrapper reported D
        wait_for(lambda: not lagging.get_submitted_or_running([job.distributor_id]), "it to leave")
        info = lagging.get_remote_exit_info(job.distributor_id)
        assert not info.finalized
        assert info.error_state is not ErrorState.DONE
    finally:
        lagging.stop()
    without = new_distributor(kit_host, SlurmCommands(), SlurmSettings(use_sacct=False))
    try:
        job = kit_host.submit(without, "true", resources={"cores": 1})
        kit_host.wait_report(FinalReport, job.task_instance_id)
        wait_for(lambda: not without.get_submitted_or_running([job.distributor_id]), "leave")
        info = without.get_remote_exit_info(job.distributor_id)
        assert info.error_state is ErrorState.UNKNOWN_ERROR  # not done: nobody can say
    finally:
        without.stop()


# --- calls per round -------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [3, 60])
def test_slurm_calls_per_round_do_not_grow_with_the_jobs(
    kit_host: KitHost, commands: SlurmCommands, jobs: int
) -> None:
    distributor = new_distributor(kit_host, commands)
    try:
        submitted = kit_host.submit_array(distributor, ["sleep 1"] * jobs, {"cores": 0.01})
        ids = [job.distributor_id for job in submitted]
        assert commands.calls["sbatch"] == 1
        worst = 0
        pending = set(ids)
        while pending:
            before = commands.calls["squeue"] + commands.calls["sacct"]
            running = distributor.get_submitted_or_running(ids)  # the host's round
            for job in sorted(pending - running):
                if distributor.get_remote_exit_info(job).finalized:
                    pending.discard(job)
            worst = max(worst, commands.calls["squeue"] + commands.calls["sacct"] - before)
            time.sleep(0.05)  # the host's pause between two rounds
        assert worst <= 2, f"{worst} squeue/sacct calls in one round for {jobs} jobs"
    finally:
        distributor.stop()


# --- through jobfleet run --------------------------------------------------------------------


def jobfleet(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("jobfleet")
    assert program
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(JOBFLEET_SLURM_POLL_MIN="0.2", JOBFLEET_SLURM_POLL_MAX="1")
    return subprocess.run(
        [program, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600
    )


def test_jobfleet_run_a_single_job_and_a_100_task_array(slurm_cluster: Any, tmp_path: Path) -> None:
    single = jobfleet(tmp_path, "run", "--cluster", "slurm", "--json", "--", "echo", "hello")
    assert single.returncode == 0, single.stderr
    assert json.loads(single.stdout)["status"] == "done"
    log = jobfleet(tmp_path, "logs", str(json.loads(single.stdout)["tasks"][0]["instance_id"]))
    assert log.stdout == "hello\n"

    (tmp_path / "hundred.txt").write_text("".join(f"echo task {n}\n" for n in range(100)))
    array = jobfleet(tmp_path, "run", "--cluster", "slurm", "--json", "hundred.txt")
    assert array.returncode == 0, array.stderr
    summary = json.loads(array.stdout)
    assert summary["state_counts"] == {"D": 100}
    [run_dir] = (tmp_path / ".jobfleet" / "runs").glob("run-2-*")  # run-N-<the run's token>
    outputs = list((run_dir / "slurm").iterdir())
    assert len(outputs) == 100
    assert len({path.name.split("_")[0] for path in outputs}) == 1  # one array job


def test_jobfleet_run_retries_a_task_over_its_memory_with_more(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    (tmp_path / "hungry.yaml").write_text(
        "tasks:\n"
        "  - name: hungry\n"
        "    command: >-\n"
        "      python3 -c \"b = bytearray(130 * 2**20); b[::4096] = b'x' * len(b[::4096])\"\n"
        "    resources: {memory: 100M}\n"
    )
    result = jobfleet(tmp_path, "run", "--cluster", "slurm", "--json", "hungry.yaml")
    assert result.returncode == 0, result.stderr
    usage = json.loads(jobfleet(tmp_path, "usage", "1", "--json").stdout)
    assert usage["tasks"][0]["memory_by_attempt"] == ["100M", "150M"]


@pytest.mark.slow
def test_over_its_time_a_job_ends_timeout_as_z(
    distributor: SlurmDistributor, kit_host: KitHost
) -> None:
    # Slurm's smallest --time is a minute, and it checks limits every ~30 s: about 75 s.
    job = kit_host.submit(distributor, LONG, resources={"cores": 1, "runtime": 60})
    info = final_info(distributor, job.distributor_id, timeout=240)
    assert info.error_state is ErrorState.RESOURCE_ERROR, info.error_message
    assert info.record is not None
    assert info.record.raw_state == "TIMEOUT"


# --- submission: chunks and idempotency -----------------------------------------------------


def test_an_array_larger_than_max_array_size_goes_in_chunks(
    distributor: SlurmDistributor, kit_host: KitHost, commands: SlurmCommands
) -> None:
    distributor._max_array_size = 4  # as a cluster with MaxArraySize=4 would say
    commands.calls.clear()
    marks = kit_host.root / "marks"
    marks.mkdir()
    submitted = kit_host.submit_array(
        distributor, [f"touch {marks}/{n}" for n in range(10)], {"cores": 0.01}
    )
    assert commands.calls["sbatch"] == 3  # 4 + 4 + 2
    jobs = {job.distributor_id.split("_")[0] for job in submitted}
    assert len(jobs) == 3
    assert [job.distributor_id.split("_")[1] for job in submitted] == [
        "0", "1", "2", "3", "0", "1", "2", "3", "0", "1",
    ]  # fmt: skip
    for job in submitted:
        assert kit_host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
    # Every step ran its own command: the offset told each chunk where it starts.
    assert sorted(int(path.name) for path in marks.iterdir()) == list(range(10))


class SbatchTimesOut(SlurmCommands):
    """sbatch that submits the job, then fails to answer in time (a busy controller)."""

    def run(self, argv: Any, *, check: bool = True) -> str:
        output = super().run(argv, check=check)
        if argv[0] == "sbatch":
            raise SlurmCommandError(argv, "no answer within 30 s", timed_out=True)
        return output


def test_after_an_sbatch_timeout_the_job_is_found_not_submitted_again(
    kit_host: KitHost, slurm_cluster: Any
) -> None:
    distributor = new_distributor(kit_host, SbatchTimesOut())
    try:
        job = kit_host.submit(distributor, "true", resources={"cores": 1})
        assert job.distributor_id.isdigit()
        assert kit_host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
        assert len(kit_host.final_reports()[job.task_instance_id]) == 1  # ran once

        def jobs_named() -> list[str] | None:
            found = subprocess.run(
                ["sacct", "-n", "-X", "--parsable2", f"--name={distributor.tag}", "-o", "JobID"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            return found or None  # accounting lags: wait until it has the job

        assert wait_for(jobs_named, "sacct to know the job") == [job.distributor_id]
    finally:
        distributor.stop()


def test_the_query_rate_limit_holds_whatever_the_host_asks(
    kit_host: KitHost, commands: SlurmCommands
) -> None:
    limited = SlurmSettings(poll_min=0.01, poll_max=0.01, max_queries_per_minute=3)
    distributor = new_distributor(kit_host, commands, limited)
    try:
        job = kit_host.submit(distributor, LONG, resources={"cores": 1})
        for _ in range(20):
            distributor.get_submitted_or_running([job.distributor_id])
            time.sleep(0.02)  # rounds faster than the poll interval
        assert commands.calls["squeue"] <= 3
    finally:
        distributor.terminate_task_instances([job.distributor_id])
        distributor.stop()


def test_queues_sync_reads_the_partitions(slurm_cluster: Any, tmp_path: Path) -> None:
    result = jobfleet(tmp_path, "queues", "sync", "--cluster", "slurm", "--json")
    assert result.returncode == 0, result.stderr
    queues = json.loads(result.stdout)["queues"]
    assert queues["debug"]["max_cores"] == slurm_cluster.cpus
    node_memory = memory_text(slurm_cluster.node_memory_mb * 2**20)
    assert queues["debug"]["max_memory"] == node_memory  # the node's, as Slurm reports it
    assert queues["default"]["partition"] == "debug"
