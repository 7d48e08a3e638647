"""The tables of docs/psij.md: JobSpec and ResourceSpecV1 to a jobfleet task, states back."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from psij import (
    InvalidJobException,
    Job,
    JobAttributes,
    JobExecutor,
    JobSpec,
    JobState,
    ResourceSpecV1,
)

from jobfleet.psij import JobfleetExecutorConfig, JobfleetJobExecutor
from jobfleet.psij.mapping import (
    Observed,
    exit_code_of,
    message_of,
    psij_state,
    resources_of,
    shell_command,
)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (ResourceSpecV1(), {"cores": 1}),
        (ResourceSpecV1(process_count=4), {"cores": 4}),
        (ResourceSpecV1(processes_per_node=2, cpu_cores_per_process=3), {"cores": 6}),
        (ResourceSpecV1(process_count=2, gpu_cores_per_process=1), {"cores": 2, "gpus": 2}),
        (ResourceSpecV1(memory=100 * 2**20), {"cores": 1, "memory": f"{100 * 2**20}B"}),
        (ResourceSpecV1(exclusive_node_use=True), {"cores": 1, "exclusive": True}),
        (ResourceSpecV1(node_count=1, processes_per_node=3), {"cores": 3}),
    ],
)
def test_resource_spec(resources: ResourceSpecV1, expected: dict[str, object]) -> None:
    spec = JobSpec("/bin/true", resources=resources)
    spec.attributes = None  # type: ignore[assignment]
    assert resources_of(spec, "multiprocess") == expected


def test_more_than_one_node_is_refused() -> None:
    spec = JobSpec("/bin/true", resources=ResourceSpecV1(node_count=2, processes_per_node=2))
    with pytest.raises(InvalidJobException, match="2 nodes"):
        resources_of(spec, "slurm")


def test_attributes() -> None:
    attributes = JobAttributes(
        duration=timedelta(seconds=3700.5),
        queue_name="debug",
        account="proj",
        reservation_id="r1",
        custom_attributes={
            "jobfleet.constraint": "haswell",
            "slurm.qos": "high",
            "pbs.place": "scatter",  # another executor's: ignored
            "plain": 1,  # no prefix: ignored
        },
    )
    spec = JobSpec("/bin/true", attributes=attributes)
    assert resources_of(spec, "slurm") == {
        "runtime": 3701,
        "queue": "debug",
        "account": "proj",
        "reservation": "r1",
        "constraint": "haswell",
        "qos": "high",
    }
    assert "qos" not in resources_of(spec, "multiprocess")


def test_default_duration_is_ten_minutes() -> None:
    assert resources_of(JobSpec("/bin/true", attributes=JobAttributes()), "x")["runtime"] == 600


def test_shell_command_runs_as_written(tmp_path: Path) -> None:
    odd = tmp_path / "a dir; with 'quotes'"
    odd.mkdir()
    command, env = shell_command(
        ["/bin/sh", "-c", 'echo "$PWD|$A|$#" "$@"', "zero", "it's", "$HOME"],
        directory=str(odd),
        env={"A": "1 2"},
        inherit_environment=True,
    )
    assert env == {"A": "1 2"}
    out = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
    assert out.stdout == f"{odd}|1 2|2 it's $HOME\n"


def test_no_inherited_environment(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes" / "job"
    command, env = shell_command(
        ["/usr/bin/env"],
        directory=None,
        env={"ONLY": "this"},
        inherit_environment=False,
        nodefile=str(nodefile),
        process_count=3,
    )
    assert env == {}
    out = subprocess.run(
        ["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin", "LEAK": "1"}, capture_output=True
    )
    lines = sorted(out.stdout.decode().splitlines())
    assert lines == ["ONLY=this", f"PSIJ_NODEFILE={nodefile}"]
    assert len(nodefile.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("observed", "state"),
    [
        (Observed("created", "pending", "Q"), JobState.QUEUED),
        (Observed("running", "pending", "O"), JobState.QUEUED),
        (Observed("running", "pending", "X"), JobState.QUEUED),
        (Observed("running", "pending", "R", started=True), JobState.ACTIVE),
        (Observed("running", "pending", "T", started=True), JobState.ACTIVE),
        (Observed("running", "pending", "E", started=True), JobState.ACTIVE),  # retry to come
        (Observed("running", "pending", "W"), JobState.QUEUED),
        (Observed("done", "done", "D"), JobState.COMPLETED),
        (Observed("failed", "failed", "E"), JobState.FAILED),
        (Observed("failed", "failed", "Z"), JobState.FAILED),
        (Observed("failed", "failed", "F"), JobState.FAILED),
        (Observed("killed", "killed", "K"), JobState.CANCELED),
        (Observed("killed", "pending", "Q"), JobState.CANCELED),
    ],
)
def test_states(observed: Observed, state: JobState) -> None:
    assert psij_state(observed) == state


def test_exit_codes_and_messages() -> None:
    assert exit_code_of(None) is None
    assert exit_code_of({"exit_code": 3}) == 3
    assert exit_code_of({"exit_code": None, "signal": 9}) == 137
    failed = Observed("failed", "failed", "Z", {"reason": "oom", "message": "over 1G"})
    assert message_of(failed) == "jobfleet state Z: over 1G"


def test_registered_through_psij_descriptors(tmp_path: Path) -> None:
    assert "jobfleet" in JobExecutor.get_executor_names()
    config = JobfleetExecutorConfig(ledger=tmp_path / "l.db", cluster="sequential")
    executor = JobExecutor.get_instance("jobfleet", config=config)
    # One class, whichever way it is reached (PSI/J loads descriptor modules by file).
    assert type(executor) is JobfleetJobExecutor
    assert executor.cluster == "sequential"


def test_url_names_the_backend(tmp_path: Path) -> None:
    config = JobfleetExecutorConfig(ledger=tmp_path / "l.db")
    assert JobfleetJobExecutor(url="slurm", config=config).cluster == "slurm"
    assert JobfleetJobExecutor(url="jobfleet://dummy", config=config).cluster == "dummy"


def test_a_job_jobfleet_cannot_run_is_refused_at_submission(tmp_path: Path) -> None:
    executor = JobfleetJobExecutor(config=JobfleetExecutorConfig(ledger=tmp_path / "l.db"))
    job = Job(JobSpec("/bin/true", resources=ResourceSpecV1(node_count=3)))
    with pytest.raises(InvalidJobException):
        executor.submit(job)
    assert job.executor is None
    assert executor.list() == []
