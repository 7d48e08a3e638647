"""Unit tables: Jobmon's units and queue tuples, the worker command, the triage mapping."""

from __future__ import annotations

import signal

import pytest

pytest.importorskip("jobmon.core", reason="needs the `jobmon` dependency group")

from jobmon.core.cluster_protocol import ClusterDistributor as JobmonClusterDistributor

from jobfleet.core.errors import BackendError, ResourceError
from jobfleet.jobmon import make_plugin
from jobfleet.jobmon.command import (
    JobmonCommandError,
    WorkerCommand,
    parse_worker_command,
    triage_state,
)
from jobfleet.jobmon.distributor import BridgeOptions, inner_resources
from jobfleet.jobmon.queue import ROUNDED_TO_ZERO
from jobfleet.jobmon.units import GIB, queue_parameters, whole_gib
from jobfleet.jobmon.worker_node import JobmonWorkerNode

TUPLES = {"cores": (1, 20), "memory": (1, 512), "runtime": (10, 86400)}


@pytest.fixture(scope="module")
def queue():
    queue_class = make_plugin("multiprocess")["get_cluster_queue_class"]()
    return queue_class(1, "default", dict(TUPLES))


@pytest.mark.parametrize(
    ("parameters", "translated", "minima"),
    [
        (
            TUPLES,
            {"min_cores": 1, "max_cores": 20, "max_memory": "512G", "max_runtime": 86400},
            {"memory": 1, "runtime": 10},
        ),
        ({"cores": 8, "memory": 0.5}, {"max_cores": 8, "max_memory": "0.5G"}, {}),
        ({"memory": [0, 64], "project": "p"}, {"max_memory": "64G", "project": "p"}, {}),
        (
            {"max_memory": "64G", "default_runtime": "1h"},
            {"max_memory": "64G", "default_runtime": "1h"},
            {},
        ),
    ],
)
def test_queue_parameters(parameters, translated, minima):
    assert queue_parameters(parameters) == (translated, minima)


@pytest.mark.parametrize("bad", [(1, 2, 3), ("1", 2), -1, True, "lots"])
def test_queue_parameters_refuse_what_is_not_a_pair_or_number(bad):
    with pytest.raises(ResourceError, match="memory"):
        queue_parameters({"memory": bad})


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [
        (GIB, None, 1),
        (1536 * 1024**2, None, 1),  # never rounded up, as Jobmon would (to 2)
        (512 * GIB, 512 * GIB, 512),
        (3 * GIB, 2 * GIB, 2),
        (100, None, 1),  # Jobmon cannot say less than 1 GiB
    ],
)
def test_whole_gib(size, limit, expected):
    assert whole_gib(size, limit) == expected


@pytest.mark.parametrize(
    ("request_", "strict", "valid", "says"),
    [
        ({"cores": 2, "memory": 4, "runtime": 60}, False, True, ""),
        ({"cores": 2, "memory": 4, "runtime": 60}, True, True, ""),
        ({"memory": 600}, False, True, "600G is above the queue maximum of 512G"),
        ({"memory": 600}, True, False, "600G is above the queue maximum of 512G"),
        ({"cores": 40}, True, False, "cores 40 is above"),
        ({"memory": 0}, False, True, ROUNDED_TO_ZERO),
        ({"memory": 0}, True, False, ROUNDED_TO_ZERO),
        ({"runtime": 5}, False, True, "below the queue minimum of 10 s"),
        ({"runtime": 5}, True, False, "below the queue minimum of 10 s"),
        ({"memory": "lots"}, False, False, "memory"),
        ({"cores": 2, "project": "proj-x", "constraints": "archive"}, True, True, ""),
    ],
)
def test_validate(queue, request_, strict, valid, says):
    ok, message = queue.validate_resources(strict=strict, **request_)
    assert ok is valid, message
    assert says in message


@pytest.mark.parametrize(
    ("request_", "coerced"),
    [
        ({"cores": 2, "memory": 4, "runtime": 60}, {"cores": 2, "memory": 4, "runtime": 60}),
        ({"cores": 40, "memory": 600}, {"cores": 20, "memory": 512}),
        ({"memory": 0}, {"memory": 1}),
        ({"memory": 1.5}, {"memory": 1}),  # whole GiB, rounded down
        ({"runtime": 5, "project": "p"}, {"runtime": 10, "project": "p"}),
    ],
)
def test_coerce(queue, request_, coerced):
    assert queue.coerce_resources(**request_) == {**coerced, "queue": "default"}


def test_coerced_memory_never_exceeds_a_fractional_limit():
    queue_class = make_plugin("multiprocess")["get_cluster_queue_class"]()
    small = queue_class(2, "small", {"memory": (1, 2.5)})
    assert small.coerce_resources(memory=3)["memory"] == 2


def test_requested_resources_reach_the_backend_in_its_units():
    resources = {"memory": 4, "runtime": 60, "cores": 2, "queue": "q", "project": "p"}
    assert inner_resources(resources) == {
        "cores": 2,
        "memory": "4G",
        "runtime": 60,
        "queue": "q",
        "project": "p",
    }


VERSION = "3.4.8"


@pytest.mark.parametrize(
    ("command", "parsed"),
    [
        (
            f"worker_node_job --task_instance_id 12 --expected_jobmon_version {VERSION} "
            "--cluster_name c",
            WorkerCommand("job", VERSION, "c", task_instance_id=12),
        ),
        (
            f"worker_node_array --array_id 3 --batch_number 0 --expected_jobmon_version "
            f"{VERSION} --cluster_name my-cluster.1",
            WorkerCommand("array", VERSION, "my-cluster.1", array_id=3, batch_number=0),
        ),
        (
            f"worker_node_job --cluster_name c --task_instance_id 7 --expected_jobmon_version "
            f"{VERSION}",
            WorkerCommand("job", VERSION, "c", task_instance_id=7),
        ),
    ],
)
def test_worker_commands_jobmon_builds_are_read(command, parsed):
    assert parse_worker_command(command) == parsed


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("", "does not start with"),
        ("rm -rf /", "does not start with"),
        ("worker_node_job --task_instance_id 1 --cluster_name c", "exactly the options"),
        (
            f"worker_node_job --task_instance_id x --expected_jobmon_version {VERSION} "
            "--cluster_name c",
            "not a whole number",
        ),
        (
            f"worker_node_job --task_instance_id 1 --expected_jobmon_version {VERSION} "
            "--cluster_name 'c; rm -rf /'",
            "shell syntax",
        ),
        (
            f"worker_node_job --task_instance_id 1 --task_instance_id 2 "
            f"--expected_jobmon_version {VERSION}",
            "given twice",
        ),
        (
            f"worker_node_job --array_id 1 --expected_jobmon_version {VERSION} --cluster_name c",
            "not an option",
        ),
        ("worker_node_job --task_instance_id '1", "cannot be split"),
        (f"task_generator --module_name m --expected_jobmon_version {VERSION}", "does not start"),
    ],
)
def test_anything_else_is_refused_clearly(command, why):
    with pytest.raises(JobmonCommandError, match=why) as caught:
        parse_worker_command(command)
    assert "only Jobmon's own worker-node commands" in str(caught.value)


def test_parsing_reads_back_what_jobmons_own_builder_writes():
    class Named:
        cluster_name = "jf"

    build = JobmonClusterDistributor.build_worker_node_command
    job = parse_worker_command(build(Named(), task_instance_id=5))  # type: ignore[arg-type]
    array = parse_worker_command(build(Named(), array_id=2, batch_number=1))  # type: ignore[arg-type]
    assert (job.task_instance_id, job.cluster_name) == (5, "jf")
    assert (array.array_id, array.batch_number) == (2, 1)
    assert " ".join(job.argv()) == build(Named(), task_instance_id=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "answer"),
    [
        ("Z", "Z"),
        ("U", "U"),
        ("F", "F"),
        ("E", "U"),
        ("D", "U"),
        ("K", "F"),
        ("R", "U"),
        ("?", "U"),
    ],
)
def test_triage_mapping_gives_only_z_u_or_f(state, answer):
    assert triage_state(state) == answer


@pytest.mark.parametrize(
    ("code", "state", "says"),
    [
        (1, "E", "exit code 1"),
        (-signal.SIGKILL, "E", "killed by SIGKILL"),
        (-signal.SIGTERM, "E", "killed by SIGTERM"),
        (128 + signal.SIGSEGV, "E", "killed by SIGSEGV"),
        (-40, "E", "killed by"),
    ],
)
def test_exit_codes_without_an_oom_kill(code, state, says):
    node = JobmonWorkerNode()
    found, message = node.get_exit_info(code, "last words")
    assert found == state
    assert says in message
    assert message.endswith("last words")


def test_an_oom_kill_counted_by_the_cgroup_is_z(monkeypatch):
    from jobfleet.jobmon import worker_node

    counts = iter([2, 3])
    monkeypatch.setattr(worker_node, "_oom_kills", lambda: next(counts))
    node = JobmonWorkerNode()
    assert node.get_exit_info(-signal.SIGKILL, "")[0] == "Z"


def test_ids_come_from_the_wrappers_environment(monkeypatch):
    monkeypatch.setenv("JOBFLEET_TASK_INSTANCE_ID", "17")
    monkeypatch.setenv("JOBFLEET_JOBMON_ARRAY_STEP", "0")
    node = JobmonWorkerNode()
    assert (node.distributor_id, node.array_step_id) == ("17", 0)
    monkeypatch.setenv("JOBFLEET_JOBMON_ARRAY_STEP", "")
    assert node.array_step_id is None


def test_logs_without_a_directory_go_to_dev_null(tmp_path):
    node = JobmonWorkerNode(distributor_id="4")
    assert node.initialize_logfile("stdout", None, "t") == "/dev/null"
    assert node.initialize_logfile("stderr", "", "t") == "/dev/null"
    path = node.initialize_logfile("stderr", str(tmp_path / "logs"), "a/b " * 100)
    assert path.startswith(str(tmp_path / "logs") + "/")
    assert path.endswith(".e4")


def test_usage_is_given_as_strings_for_jobmon_3_7():
    usage = JobmonWorkerNode().get_usage_stats()
    assert set(usage) == {"maxrss", "cpu", "wallclock", "usage_str"}
    assert all(isinstance(value, str) for value in usage.values())


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"chanel": "/x"}, "Unknown connection parameters 'chanel'"),
        ({"settings": []}, "'settings' must be an object"),
        ({"arrays": "yes"}, "'arrays' must be true or false"),
        ({"triage_patience": -1}, "triage_patience"),
        ({"channel": 5}, "'channel' must be a string"),
    ],
)
def test_connection_parameters_are_checked(parameters, problem):
    with pytest.raises(BackendError, match=problem):
        BridgeOptions.from_parameters(parameters)


def test_the_distributor_refuses_other_commands_before_submitting():
    distributor_class = make_plugin("dummy")["get_cluster_distributor_class"]()
    distributor = distributor_class("jf")
    with pytest.raises(JobmonCommandError):
        distributor.submit_to_batch_distributor("echo hi", "t", {})
    with pytest.raises(BackendError, match="names the cluster 'other'"):
        distributor.submit_to_batch_distributor(
            f"worker_node_job --task_instance_id 1 --expected_jobmon_version {VERSION} "
            "--cluster_name other",
            "t",
            {},
        )


class _Inner:
    """A backend distributor whose triage answer a test sets."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def get_remote_exit_info(self, distributor_id: str) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _distributor(answer: object, patience: float):
    distributor_class = make_plugin("multiprocess")["get_cluster_distributor_class"]()
    distributor = distributor_class("jf", triage_patience=patience)
    distributor._inner = _Inner(answer)
    distributor._inner_ids["1"] = "inner-1"
    return distributor


def _info(state: str, *, finalized: bool = True):
    from jobfleet.core.exit_info import RemoteExitInfo

    return RemoteExitInfo(state, f"the backend says {state}", finalized=finalized)


@pytest.mark.parametrize(
    ("answer", "patient", "expected"),
    [
        (_info("Z"), True, "Z"),  # decisive at once
        (_info("F"), True, "F"),
        (_info("K"), True, "F"),  # cancelled by someone else: decisive too
        (_info("E"), True, None),  # the wrapper's report may still come
        (_info("Z", finalized=False), True, None),
        (RuntimeError("squeue failed"), True, None),
        (_info("E"), False, "U"),
        (_info("D"), False, "U"),
        (_info("K"), False, "F"),
        (_info("Z", finalized=False), False, "Z"),
        (RuntimeError("squeue failed"), False, "U"),
        (("E", "a Jobmon-style pair"), False, "U"),
    ],
)
def test_triage_answers_z_u_f_or_not_yet(answer, patient, expected):
    from jobmon.core.exceptions import RemoteExitInfoNotAvailable

    distributor = _distributor(answer, 3600 if patient else 0)
    if expected is None:
        with pytest.raises(RemoteExitInfoNotAvailable):
            distributor.get_remote_exit_info("1")
    else:
        state, message = distributor.get_remote_exit_info("1")
        assert state == expected, message


def test_triage_of_an_unknown_instance_is_u_once_patience_is_over():
    from jobmon.core.exceptions import RemoteExitInfoNotAvailable

    with pytest.raises(RemoteExitInfoNotAvailable):
        _distributor(_info("Z"), 3600).get_remote_exit_info("99")
    state, message = _distributor(_info("Z"), 0).get_remote_exit_info("99")
    assert state == "U"
    assert "does not know the instance 99" in message
