"""The executor's host against the real multiprocess backend: what PSI/J's suite does not
check (another process attaching, the executor's own callback, the node file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

from psij import Job, JobSpec, JobState, JobStatus, ResourceSpecV1

from jobfleet.psij import JobfleetExecutorConfig, JobfleetJobExecutor

TIMEOUT = timedelta(seconds=120)


def test_a_job_outlives_the_process_that_submitted_it(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    out = tmp_path / "out.txt"
    submit = textwrap.dedent(
        f"""
        from psij import Job, JobExecutor, JobSpec, JobState
        from jobfleet.psij import JobfleetExecutorConfig
        config = JobfleetExecutorConfig(ledger={str(ledger)!r})
        executor = JobExecutor.get_instance("jobfleet", config=config)
        job = Job(JobSpec("/bin/sh", ["-c", "sleep 3; echo late"], stdout_path={str(out)!r}))
        executor.submit(job)
        job.wait(target_states=[JobState.ACTIVE])
        print(job.native_id)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", submit], capture_output=True, text=True, timeout=120, check=True
    )
    native_id = done.stdout.strip()
    executor = JobfleetJobExecutor(config=JobfleetExecutorConfig(ledger=ledger))
    assert native_id in executor.list()
    seen: list[JobState] = []
    executor.set_job_status_callback(lambda job, status: seen.append(status.state))
    job = Job()
    executor.attach(job, native_id)
    status = job.wait(timeout=TIMEOUT)
    assert status is not None
    assert status.state == JobState.COMPLETED, status
    assert out.read_text() == "late\n"
    assert seen[-1] == JobState.COMPLETED
    assert native_id not in executor.list()


def test_node_file_and_statuses(tmp_path: Path) -> None:
    config = JobfleetExecutorConfig(ledger=tmp_path / "ledger.db", work_directory=tmp_path / "w")
    executor = JobfleetJobExecutor(config=config)
    out = tmp_path / "nodes.txt"
    spec = JobSpec(
        "/bin/sh",
        ["-c", 'cat "$PSIJ_NODEFILE"'],
        stdout_path=out,
        resources=ResourceSpecV1(process_count=3),
        launcher="single",
    )
    statuses: list[JobStatus] = []
    job = Job(spec)
    job.set_job_status_callback(lambda _job, status: statuses.append(status))
    executor.submit(job)
    status = job.wait(timeout=TIMEOUT)
    assert status is not None
    assert status.state == JobState.COMPLETED, status
    assert len(set(out.read_text().splitlines())) == 1
    assert len(out.read_text().splitlines()) == 3
    assert [s.state for s in statuses] == [JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED]
    assert statuses[-1].exit_code == 0
    assert not list((tmp_path / "w" / "jobfleet-nodefiles").iterdir())  # removed at the end
