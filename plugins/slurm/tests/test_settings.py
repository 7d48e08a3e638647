"""The Slurm backend's settings and the sbatch options it builds (no cluster needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from jobfleet.plugins.slurm.distributor import SlurmDistributor, _slurm_time
from jobfleet.plugins.slurm.settings import SlurmSettings, extra_sbatch_options


@pytest.mark.parametrize(
    "text", ["--array=1-3", "-J name", "--job-name=x", "--parsable", "--wrap=ls", "-o/tmp/x"]
)
def test_options_that_break_tracking_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="may not hold"):
        SlurmSettings(extra_sbatch=text)


def test_extra_options_pass_as_argv() -> None:
    assert extra_sbatch_options("--exclusive --reservation='my res'") == [
        "--exclusive",
        "--reservation=my res",
    ]
    with pytest.raises(ValueError, match="--name=value"):
        extra_sbatch_options("--reservation r1")


def test_poll_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="poll_min"):
        SlurmSettings(poll_min=5, poll_max=1)


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "0-00:01:00"), (61, "0-00:02:00"), (90061, "1-01:02:00")]
)
def test_runtime_rounds_up_to_minutes(seconds: int, text: str) -> None:
    assert _slurm_time(seconds) == text


def test_resources_become_sbatch_options(tmp_path: Path) -> None:
    distributor = SlurmDistributor(
        "slurm",
        settings=SlurmSettings(account="lab", extra_sbatch="--exclusive"),
        host_url=f"file://{tmp_path}/channel",
    )
    options = distributor._resource_options(
        {
            "cores": 1.5,
            "memory": "1536M",
            "runtime": 3600,
            "gpus": "a100:2",
            "queue": "short",
            "constraint": "skylake",
        }
    )
    assert options == [
        "--cpus-per-task=2",
        "--mem=1536M",
        "--time=0-01:00:00",
        "--gres=gpu:a100:2",
        "--partition=short",
        "--account=lab",
        "--constraint=skylake",
        "--exclusive",
    ]
    # The host's "default" queue is the cluster's default partition: no --partition.
    assert not any(o.startswith("--partition") for o in distributor._resource_options({}))


def test_the_script_runs_only_the_quoted_worker_node(tmp_path: Path) -> None:
    distributor = SlurmDistributor("slurm", host_url=f"file://{tmp_path}/a channel; rm -rf /")
    distributor.start()
    try:
        script = distributor._write_script("job --task-instance-id 7", "token")
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/bin/sh"
        assert len(lines) == 2
        argv = shlex.split(lines[1])
        assert argv[0] == "exec"
        assert argv[-4:] == [
            "--cluster",
            "slurm",
            "--host-url",
            f"file://{tmp_path}/a channel; rm -rf /",
        ]
        assert argv[2:5] == ["job", "--task-instance-id", "7"]
    finally:
        distributor.stop()
    assert not script.exists()


def test_the_tag_is_stable_for_a_run_and_differs_between_runs(tmp_path: Path) -> None:
    first = SlurmDistributor("slurm", host_url="file:///runs/run-1/channel")
    again = SlurmDistributor("slurm", host_url="file:///runs/run-1/channel")
    other = SlurmDistributor("slurm", host_url="file:///runs/run-2/channel")
    assert first.tag == again.tag != other.tag
    assert first.tag.startswith("jobfleet-")
