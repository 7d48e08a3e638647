"""The throwaway Slurm cluster works the way the plugin's tests rely on.

Every test drives the real commands (sbatch, squeue, sacct, scancel, sinfo, scontrol) through
the environment the `slurm_cluster` fixture sets; waits poll with a deadline.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from jobfleet.core.testing.host import wait_for

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

# sacct lags the controller by up to a few seconds after a burst: generous, a CI runner is slow.
TIMEOUT = 60.0


def slurm(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout


def submit(directory: Path, body: str, *options: str, output: str = "slurm-%j.out") -> str:
    """sbatch a script file, as the plugin does; the job's id."""
    script = directory / f"job-{len(list(directory.glob('job-*.sh')))}.sh"
    script.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    return slurm(
        "sbatch", "--parsable", f"--chdir={directory}", f"--output={directory / output}",
        *options, str(script),
    ).strip()  # fmt: skip


def accounting(job: str, fields: str = "JobID,State,ExitCode") -> list[list[str]]:
    """sacct's allocation lines for `job` (array tasks each have one)."""
    out = slurm("sacct", "-j", job, "--parsable2", "-n", "-X", "-o", fields)
    return [line.split("|") for line in out.splitlines()]


def final_states(job: str, count: int = 1) -> list[list[str]] | None:
    """The accounting lines once `count` of them are there and none is pending or running."""
    rows = accounting(job)
    busy = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}
    if len(rows) < count or any(row[1] in busy for row in rows):
        return None
    return rows


def test_the_node_is_idle_with_the_configured_cpus_and_memory(slurm_cluster: SlurmCluster):
    (line,) = slurm("sinfo", "-h", "-N", "-o", "%N|%P|%T|%c|%m").splitlines()
    node, partition, state, cpus, memory = line.split("|")
    assert node == slurm_cluster.node_name
    assert partition == f"{slurm_cluster.partition}*"  # the default partition
    assert state == "idle"
    assert int(cpus) == slurm_cluster.cpus
    assert int(memory) == slurm_cluster.node_memory_mb


def test_the_configuration_is_the_fixtures(slurm_cluster: SlurmCluster):
    config = dict(
        line.split(" = ", 1) for line in slurm("scontrol", "show", "config").splitlines()
        if " = " in line
    )  # fmt: skip
    config = {key.strip(): value.strip() for key, value in config.items()}
    assert config["SLURM_CONF"] == str(slurm_cluster.conf_path)
    assert config["ClusterName"] == slurm_cluster.cluster_name
    assert int(config["MaxArraySize"]) == slurm_cluster.max_array_size
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"


def test_a_script_job_completes_and_sacct_says_so(slurm_cluster: SlurmCluster, tmp_path: Path):
    job = submit(tmp_path, "echo hello from $SLURM_JOB_ID\n", "--job-name=jf-hello",
                 "--comment=jobfleet run 7")  # fmt: skip
    assert job.isdigit()
    rows = wait_for(lambda: final_states(job), f"job {job} to end in sacct", TIMEOUT)
    assert rows == [[job, "COMPLETED", "0:0"]]
    assert (tmp_path / f"slurm-{job}.out").read_text() == f"hello from {job}\n"
    # For a few seconds after a short job ends sacct may still name it "allocation": poll.
    wait_for(
        lambda: accounting(job, "JobName") == [["jf-hello"]], f"job {job}'s name in sacct",
        TIMEOUT,
    )  # fmt: skip


def test_max_rss_is_accounted_on_the_batch_step(slurm_cluster: SlurmCluster, tmp_path: Path):
    job = submit(tmp_path, """\
        python3 -c 'data = b"x" * (100 << 20); import time; time.sleep(1.5)'
    """, "--mem=500M")  # fmt: skip
    wait_for(lambda: final_states(job), f"job {job} to end in sacct", TIMEOUT)
    out = slurm("sacct", "-j", f"{job}.batch", "--parsable2", "-n", "-o", "State,MaxRSS",
                "--noconvert")  # fmt: skip
    state, max_rss = out.strip().split("|")
    assert state == "COMPLETED"
    assert int(max_rss) >= 100 << 20


def test_a_job_over_its_memory_ends_out_of_memory(slurm_cluster: SlurmCluster, tmp_path: Path):
    job = submit(tmp_path, """\
        python3 -c 'data = b"x" * (300 << 20); import time; time.sleep(5)'
        echo survived
    """, "--mem=50M")  # fmt: skip
    rows = wait_for(lambda: final_states(job), f"job {job} to end in sacct", TIMEOUT)
    assert rows == [[job, "OUT_OF_MEMORY", "0:125"]]


def test_an_array_runs_every_task_under_its_own_id(slurm_cluster: SlurmCluster, tmp_path: Path):
    job = submit(tmp_path, "echo task $SLURM_ARRAY_TASK_ID\n", "--array=0-9",
                 output="slurm-%A_%a.out")  # fmt: skip
    rows = wait_for(lambda: final_states(job, 10), f"array {job} to end in sacct", TIMEOUT)
    assert sorted(rows) == sorted([f"{job}_{n}", "COMPLETED", "0:0"] for n in range(10))
    for n in range(10):
        assert (tmp_path / f"slurm-{job}_{n}.out").read_text() == f"task {n}\n"


def test_scancel_ends_a_running_job_cancelled(slurm_cluster: SlurmCluster, tmp_path: Path):
    job = submit(tmp_path, "sleep 600\n")
    wait_for(
        lambda: slurm("squeue", "-h", "-j", job, "-o", "%T").strip() == "RUNNING",
        f"job {job} to run", TIMEOUT,
    )  # fmt: skip
    slurm("scancel", job)
    rows = wait_for(lambda: final_states(job), f"job {job} to end in sacct", TIMEOUT)
    ((job_id, state, _exit_code),) = rows
    assert job_id == job
    assert state.startswith("CANCELLED")  # "CANCELLED by 0": who cancelled it


@pytest.mark.parametrize("option", ["--job-name=jf-visible", "--comment=jf-visible"])
def test_names_and_comments_show_in_squeue(
    slurm_cluster: SlurmCluster, tmp_path: Path, option: str
):
    job = submit(tmp_path, "sleep 600\n", option)
    try:
        listed = slurm("squeue", "-h", "-j", job, "-o", "%i|%j|%k").strip().split("|")
        assert "jf-visible" in listed[1:]
    finally:
        slurm("scancel", job)
