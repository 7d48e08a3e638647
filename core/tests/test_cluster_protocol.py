import pytest

from jobfleet.core.cluster_protocol import (
    ClusterDistributor,
    ClusterQueue,
    ClusterWorkerNode,
    NodeInfo,
    ScalableDistributor,
    protocol_problems,
)
from jobfleet.core.exit_info import RemoteExitInfo


class MinimalDistributor(ClusterDistributor):
    def __init__(self, cluster_name, **connection_parameters):
        self.cluster_name = cluster_name

    @property
    def worker_node_entry_point(self):
        return "jobfleet-worker-node"

    def start(self): ...
    def stop(self): ...
    def get_queueing_errors(self, distributor_ids):
        return {}

    def get_submitted_or_running(self, distributor_ids):
        return set()

    def terminate_task_instances(self, distributor_ids): ...
    def submit_to_batch_distributor(self, command, name, requested_resources):
        return "1"

    def get_remote_exit_info(self, distributor_id):
        return RemoteExitInfo.unknown("?")


def test_jobmon_defaults():
    distributor = MinimalDistributor("c")
    assert distributor.build_worker_node_command(task_instance_id=12) == "job --task-instance-id 12"
    assert (
        distributor.build_worker_node_command(array_id=3, batch_number=0)
        == "array --array-id 3 --batch-number 0"
    )
    with pytest.raises(NotImplementedError):
        distributor.submit_array_to_batch_distributor("array", "n", {}, 3)
    with pytest.raises(ValueError, match="array_id"):
        distributor.build_worker_node_command(array_id=3)


def test_worker_node_command_cannot_carry_shell_text():
    with pytest.raises(ValueError, match="invalid literal"):
        MinimalDistributor("c").build_worker_node_command(task_instance_id="1; rm -rf /")


def test_complete_class_has_no_problems():
    assert protocol_problems(MinimalDistributor, ClusterDistributor) == []


def test_incomplete_class_names_what_is_missing():
    class Half(ClusterDistributor):
        def start(self): ...

    problems = " ".join(protocol_problems(Half, ClusterDistributor))
    assert "get_remote_exit_info" in problems
    assert "submit_to_batch_distributor" in problems


def test_wrong_signature_is_named():
    class WrongQueue:
        def __init__(self, queue_id, queue_name, parameters): ...
        def validate_resources(self, cores): ...  # no strict, no **kwargs
        def coerce_resources(self, **kwargs): ...

        parameters = queue_name = queue_id = required_resources = None

    problems = protocol_problems(WrongQueue, ClusterQueue)
    assert len(problems) == 1
    assert "validate_resources" in problems[0]


def test_unrelated_class_works_when_it_has_the_members():
    class DuckNode:
        distributor_id = None
        array_step_id = None

        def get_usage_stats(self):
            return {}

        def get_exit_info(self, exit_code, error_msg):
            return ("D", "")

        def initialize_logfile(self, log_type, log_dir, name):
            return ""

    assert protocol_problems(DuckNode, ClusterWorkerNode) == []
    assert protocol_problems(DuckNode(), ClusterWorkerNode)[0].startswith("expected a class")


def test_scalable_distributor_is_checkable_at_runtime():
    class Scalable(MinimalDistributor):
        def get_nodes(self):
            return {"n1": NodeInfo(1, 2**30, 8, 2**34)}

        def node_in_use(self, node):
            return False

        def ignore_node(self, node): ...
        def unignore_node(self, node): ...

    assert isinstance(Scalable("c"), ScalableDistributor)
    assert not isinstance(MinimalDistributor("c"), ScalableDistributor)
    assert Scalable("c").get_nodes()["n1"].cores_total == 8


class StaticNode:
    """Jobmon's sequential and dummy worker nodes: the exit and usage methods are static."""

    distributor_id = None
    array_step_id = None

    @staticmethod
    def get_usage_stats():
        return {}

    @staticmethod
    def get_exit_info(exit_code, error_msg):
        return ("D", "")

    @classmethod
    def initialize_logfile(cls, log_type, log_dir, name):
        return "/dev/null"


def test_static_and_class_methods_are_checked_without_a_self():
    assert protocol_problems(StaticNode, ClusterWorkerNode) == []


def test_static_and_class_methods_with_the_wrong_arguments_are_still_named():
    class WrongStaticNode(StaticNode):
        @staticmethod
        def get_exit_info(exit_code):  # no error_msg
            return ("D", "")

        @classmethod
        def initialize_logfile(cls, log_type, log_dir):  # no name
            return "/dev/null"

    problems = protocol_problems(WrongStaticNode, ClusterWorkerNode)
    assert len(problems) == 2, problems
    assert "get_exit_info" in problems[0]
    assert "initialize_logfile" in problems[1]


def test_a_static_method_taking_a_self_of_its_own_is_named():
    class Confused(StaticNode):
        @staticmethod
        def get_exit_info(self, exit_code, error_msg):  # never given a self
            return ("D", "")

    [problem] = protocol_problems(Confused, ClusterWorkerNode)
    assert "get_exit_info" in problem


class LoggingNode(ClusterWorkerNode):
    distributor_id = "42"
    array_step_id = None

    def __init__(self):
        pass

    def get_usage_stats(self):
        return {}

    def get_exit_info(self, exit_code, error_msg):
        return ("D", "")


def test_no_log_directory_means_dev_null(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert LoggingNode().initialize_logfile("stdout", None, "task") == "/dev/null"
    assert LoggingNode().initialize_logfile("stderr", None, "../task") == "/dev/null"
    assert LoggingNode().initialize_logfile("stdout", "", "task") == "/dev/null"  # as Jobmon's
    assert list(tmp_path.iterdir()) == []  # nothing created anywhere


def test_a_log_directory_gets_the_log_file(tmp_path):
    path = LoggingNode().initialize_logfile("stdout", str(tmp_path / "logs"), "task")
    assert path == str(tmp_path / "logs" / "task.stdout.42")
    assert (tmp_path / "logs" / "task.stdout.42").is_file()
