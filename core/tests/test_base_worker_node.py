import json
import signal

import pytest

from jobfleet.core.base_worker_node import BaseClusterWorkerNode, record_from_exit_code
from jobfleet.core.cluster_protocol import ClusterWorkerNode, protocol_problems
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord


class SlurmLikeNode(BaseClusterWorkerNode):
    distributor_id_variables = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")
    array_step_variables = ("SLURM_ARRAY_TASK_ID",)


def test_fits_the_protocol():
    assert protocol_problems(BaseClusterWorkerNode, ClusterWorkerNode) == []
    assert protocol_problems(SlurmLikeNode, ClusterWorkerNode) == []


def test_ids_come_from_the_first_variable_set(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    node = SlurmLikeNode()
    assert node.distributor_id == "42"
    assert node.array_step_id == 7
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    assert node.distributor_id == "40"


@pytest.mark.parametrize("value", ["", "-1", "x", "٣", "1.5"])
def test_a_step_that_is_not_a_counter_is_no_step(monkeypatch, value):
    monkeypatch.setenv("JOBFLEET_ARRAY_STEP_ID", value)
    assert BaseClusterWorkerNode().array_step_id is None


@pytest.mark.parametrize(
    ("code", "reason", "state", "sig"),
    [
        (0, ExitReason.COMPLETED, "D", None),
        (3, ExitReason.FAILED, "E", None),
        (126, ExitReason.LAUNCHER_ERROR, "F", None),
        (127, ExitReason.LAUNCHER_ERROR, "F", None),
        (137, ExitReason.FAILED, "E", signal.SIGKILL),
        (255, ExitReason.FAILED, "E", None),
    ],
)
def test_jobmon_style_exit_info(code, reason, state, sig):
    record = record_from_exit_code(code)
    assert record.reason is reason
    assert record.signal == sig
    result = BaseClusterWorkerNode().get_exit_info(code, "")
    assert result[0] == state
    assert result[1], "the message must say something"


@pytest.mark.parametrize(
    ("record", "state", "text"),
    [
        (ExitRecord(ExitReason.OOM, signal=9), ErrorState.RESOURCE_ERROR, "killed by SIGKILL"),
        (ExitRecord(ExitReason.TIMEOUT, signal=15), ErrorState.RESOURCE_ERROR, "SIGTERM"),
        (ExitRecord(ExitReason.CANCELLED, exit_code=143), ErrorState.KILL_SELF, "exit code 143"),
        (
            ExitRecord(ExitReason.FAILED, signal=11, core_dumped=True),
            ErrorState.ERROR_RECOVERABLE,
            "core dumped",
        ),
        (ExitRecord(ExitReason.FAILED, message="said so"), ErrorState.ERROR_RECOVERABLE, "said so"),
    ],
)
def test_structured_exit_info(record, state, text):
    got_state, message = BaseClusterWorkerNode().error_state_for(record)
    assert got_state is state
    assert text in message


def test_usage_comes_from_the_attached_source_else_from_rusage():
    node = BaseClusterWorkerNode()
    fallback = node.get_usage_stats()
    assert set(fallback) == {"maxrss", "cpu", "wallclock", "usage_str"}
    assert json.loads(fallback["usage_str"])["maxrss_source"] == "rusage"
    measured = {"maxrss": 1, "cpu": 2.0, "wallclock": 3.0, "usage_str": "{}"}
    node.attach_usage(lambda: measured)
    assert node.get_usage_stats() == measured
