"""Elastic Slurm: Slurm's power saving calling jobfleet's provisioners (issue 15, item 4).

Against the `elastic_slurm_cluster` of conftest.py (its own controller, three CLOUD nodes, two
spare nodes): the power programs' configuration and hostlist expansion, a failing resume marking
its nodes down with a reason, the local provisioner (slurmd daemons on this machine) through the
kit's ProvisionerTests, and end to end a `jobfleet run` whose tasks need the cloud nodes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from jobfleet.core.scaling import Node
from jobfleet.core.testing.host import wait_for
from jobfleet.core.testing.provisioner import ProvisionerTests
from jobfleet.plugins.slurm.power import (
    CONFIG_VARIABLE,
    PowerConfig,
    PowerConfigError,
    PowerPrograms,
    expand_hostlist,
)

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

HERE = Path(__file__).resolve().parent


def _load(name: str) -> ModuleType:
    # Test directories are not packages (--import-mode=importlib): load the helper by path,
    # under the module name the power programs import it by (python_path in their config).
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local_provisioner = _load("local_provisioner")
LocalSlurmdProvisioner = local_provisioner.LocalSlurmdProvisioner


@pytest.fixture
def slurm_env(elastic_slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slurm's commands in this process talk to the elastic cluster (for this test only)."""
    for name, value in elastic_slurm_cluster.env.items():
        monkeypatch.setenv(name, value)


def slurm(cluster: SlurmCluster, *argv: str) -> str:
    return cluster.run(*argv).stdout


def node_state(cluster: SlurmCluster, name: str) -> tuple[str, str]:
    """(State, Reason) of a node in `scontrol show node`."""
    fields: dict[str, str] = {}
    for word in slurm(cluster, "scontrol", "-o", "show", "node", name).split():
        key, _, value = word.partition("=")
        fields.setdefault(key, value)
    reason = slurm(cluster, "sinfo", "-h", "-n", name, "-o", "%E").strip()
    return fields.get("State", ""), reason


# --- the configuration ---------------------------------------------------------------------


def test_the_config_is_found_beside_slurm_conf_or_where_the_variable_says() -> None:
    assert PowerConfig.locate({"SLURM_CONF": "/etc/slurm/slurm.conf"}) == Path(
        "/etc/slurm/jobfleet-power.toml"
    )
    assert PowerConfig.locate({CONFIG_VARIABLE: "/x/p.toml", "SLURM_CONF": "/y/slurm.conf"}) == (
        Path("/x/p.toml")
    )


def test_the_config_maps_node_names_to_types(tmp_path: Path) -> None:
    path = tmp_path / "jobfleet-power.toml"
    path.write_text(textwrap.dedent("""\
        provisioner = "aws"
        node_type = "c5.large"
        [node_types]
        "gpu*" = "p3.2xlarge"
        [settings]
        region = "eu-west-1"
    """))  # fmt: skip
    config = PowerConfig.load(path)
    assert config.node_type_of("gpu3") == "p3.2xlarge"
    assert config.node_type_of("cloud1") == "c5.large"
    assert config.settings == {"region": "eu-west-1"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "'provisioner' is required"),
        ('provisioner = "aws"\nattempt = 2\n', "unknown keys attempt"),
        ('provisioner = "aws"\nattempts = "2"\n', "attempts has the wrong type"),
        ('provisioner = "aws"\nattempts = 0\n', "attempts must be 1 or more"),
        ("provisioner = \n", "not valid TOML"),
    ],
)
def test_a_bad_config_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "jobfleet-power.toml"
    path.write_text(text)
    with pytest.raises(PowerConfigError, match=problem):
        PowerConfig.load(path)


def test_a_missing_config_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(PowerConfigError, match=str(tmp_path / "none.toml")):
        PowerConfig.load(tmp_path / "none.toml")


def test_hostlists_are_expanded_by_slurm(slurm_env: None) -> None:
    scontrol = shutil.which("scontrol")
    assert scontrol
    assert expand_hostlist("cloud5000n[1-3,7],x", scontrol) == [
        "cloud5000n1", "cloud5000n2", "cloud5000n3", "cloud5000n7", "x",
    ]  # fmt: skip
    assert expand_hostlist("", scontrol) == []


# --- resume and suspend, with a provisioner that fails ---------------------------------------


class FakeProvisioner:
    """Records calls; fails as told."""

    def __init__(self, fail: BaseException | None = None, retryable: bool = False) -> None:
        self.fail = fail
        self.retryable = retryable
        self.calls: list[tuple[str, list[str]]] = []
        self.nodes: dict[str, Node] = {}

    def add_named_nodes(self, node_type: str, names: Any, **options: Any) -> list[Node]:
        self.calls.append(("add", list(names)))
        if self.fail is not None:
            error, self.fail = self.fail, None if self.retryable else self.fail
            raise error
        made = [Node(name, node_type, False, private_ip="127.0.0.1") for name in names[:-1]]
        self.nodes.update((node.name, node) for node in made)
        return made  # one short: the last name is "not created"

    def get_provisioned_workers(self, **options: Any) -> list[Node]:
        return list(self.nodes.values())

    def terminate_nodes(self, nodes: Any) -> None:
        self.calls.append(("terminate", [node.name for node in nodes]))
        for node in nodes:
            self.nodes.pop(node.name, None)

    def retry_predicate(self, error: BaseException) -> bool:
        return self.retryable


@pytest.fixture
def fake_scontrol(tmp_path: Path) -> tuple[str, Path]:
    """An scontrol that records its argv (one JSON list a line) and answers nothing, but for
    `show hostnames`, which the real one answers."""
    record = tmp_path / "scontrol-calls"
    program = tmp_path / "scontrol"
    real = shutil.which("scontrol", path="/usr/bin:/usr/sbin:/bin")
    program.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"if sys.argv[1:3] == ['show', 'hostnames']:\n"
        f"    os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    program.chmod(0o755)
    return str(program), record


def calls_of(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def programs_with(provisioner: Any, scontrol: str, tmp_path: Path, **config: Any) -> PowerPrograms:
    settings = {"node_type": "cloud", "attempts": 2, **config}
    return PowerPrograms(
        PowerConfig(provisioner="fake", path=tmp_path / "p.toml", **settings),
        provisioner,
        scontrol=scontrol,
        sleep=lambda seconds: None,
    )


def test_a_failed_resume_marks_the_nodes_down_with_the_reason(
    fake_scontrol: tuple[str, Path], tmp_path: Path
) -> None:
    scontrol, record = fake_scontrol
    provisioner = FakeProvisioner(fail=RuntimeError("InsufficientInstanceCapacity\nmore"))
    programs = programs_with(provisioner, scontrol, tmp_path)
    assert programs.resume(["c1", "c2"]) is False
    assert provisioner.calls == [("add", ["c1", "c2"])]  # not retryable: one attempt
    assert calls_of(record) == [[
        "update", "nodename=c1,c2", "state=down",
        "reason=jobfleet: resume failed: RuntimeError: InsufficientInstanceCapacity",
    ]]  # fmt: skip


def test_a_retryable_error_is_retried_and_a_node_not_created_is_marked_down(
    fake_scontrol: tuple[str, Path], tmp_path: Path
) -> None:
    scontrol, record = fake_scontrol
    provisioner = FakeProvisioner(fail=RuntimeError("RequestLimitExceeded"), retryable=True)
    programs = programs_with(provisioner, scontrol, tmp_path)
    assert programs.resume(["c1", "c2"]) is False
    assert provisioner.calls == [("add", ["c1", "c2"]), ("add", ["c1", "c2"])]
    assert calls_of(record) == [
        ["update", "nodename=c1", "nodeaddr=127.0.0.1"],  # created: Slurm learns its address
        ["update", "nodename=c2", "state=down",
         "reason=jobfleet: the provisioner did not create it (type cloud)"],
    ]  # fmt: skip


def test_a_provisioner_without_named_nodes_or_a_node_without_type_is_refused(
    fake_scontrol: tuple[str, Path], tmp_path: Path
) -> None:
    scontrol, record = fake_scontrol
    assert programs_with(object(), scontrol, tmp_path).resume(["c1"]) is False
    assert programs_with(FakeProvisioner(), scontrol, tmp_path, node_type=None).resume(["c1"]) is (
        False
    )
    reasons = [call[-1] for call in calls_of(record)]
    assert (
        reasons[0] == "reason=jobfleet: object cannot create named nodes (it lacks add_named_nodes)"
    )
    assert reasons[1].startswith("reason=jobfleet: no node type for it")


def test_suspend_terminates_the_named_nodes_and_ignores_those_already_gone(
    fake_scontrol: tuple[str, Path], tmp_path: Path
) -> None:
    scontrol, _ = fake_scontrol
    provisioner = FakeProvisioner()
    provisioner.nodes = {name: Node(name, "cloud", False) for name in ("c1", "c2", "c3")}
    programs = programs_with(provisioner, scontrol, tmp_path)
    assert programs.terminate(["c1", "c3", "gone"]) is True
    assert provisioner.calls == [("terminate", ["c1", "c3"])]
    assert list(provisioner.nodes) == ["c2"]


def test_the_resume_program_marks_nodes_down_when_the_provisioner_cannot_load(
    elastic_slurm_cluster: SlurmCluster, fake_scontrol: tuple[str, Path], tmp_path: Path
) -> None:
    """The installed program, run as slurmctld runs it: only SLURM_CONF (and here the
    variable naming the config) in its environment, no PATH, no standard streams."""
    scontrol, record = fake_scontrol
    log = tmp_path / "power.log"
    config = tmp_path / "jobfleet-power.toml"
    config.write_text(
        f'provisioner = "no_such_module:Nothing"\nscontrol = "{scontrol}"\n'
        f'log_file = "{log}"\nnode_type = "cloud"\n'
    )
    program = shutil.which("jobfleet-slurm-resume")
    assert program
    env = {"SLURM_CONF": str(elastic_slurm_cluster.conf_path), CONFIG_VARIABLE: str(config)}
    done = subprocess.run(
        [program, "cloud9n[1-2]"], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    down = [call for call in calls_of(record) if call[0] == "update"]
    assert down == [[
        "update", "nodename=cloud9n1,cloud9n2", "state=down",
        "reason=jobfleet: cannot load provisioner no_such_module:Nothing: "
        "ModuleNotFoundError: No module named 'no_such_module'",
    ]]  # fmt: skip
    text = log.read_text()
    assert "resume cloud9n[1-2]" in text
    assert "cannot load the provisioner 'no_such_module:Nothing'" in text
    assert "marking cloud9n1,cloud9n2 down" in text


# --- the local provisioner through the kit ----------------------------------------------------


class TestLocalSlurmdProvisioner(ProvisionerTests):
    """Its nodes are the elastic cluster's spare nodes (partition "spare", no power saving)."""

    node_type = "spare"
    supports_preemptible = False

    @pytest.fixture
    def make_provisioner(
        self, elastic_slurm_cluster: SlurmCluster, tmp_path: Path
    ) -> Callable[[str], Any]:
        cluster = elastic_slurm_cluster
        return lambda cluster_name: LocalSlurmdProvisioner(
            cluster_name,
            state_dir=str(tmp_path / "nodes"),
            slurm_conf=str(cluster.conf_path),
            node_types={"spare": {"names": cluster.spare_node_names, "cores": cluster.cloud_cpus,
                                  "memory": 2**30, "disk": 2**30}},
        )  # fmt: skip

    @pytest.fixture
    def throttling_error(self) -> BaseException:
        return BlockingIOError(11, "Resource temporarily unavailable")


def test_a_local_node_registers_with_slurm_and_is_stopped_by_pid(
    elastic_slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    cluster = elastic_slurm_cluster
    provisioner = LocalSlurmdProvisioner(
        "registers", state_dir=str(tmp_path), slurm_conf=str(cluster.conf_path),
        node_types={"spare": {"names": cluster.spare_node_names[:1]}},
    )  # fmt: skip
    try:
        (node,) = provisioner.add_named_nodes("spare", cluster.spare_node_names[:1])
        wait_for(
            lambda: node_state(cluster, node.name)[0].startswith("IDLE"),
            f"{node.name} to register and be idle", 60,
        )  # fmt: skip
        pid = int(node.tags["pid"])
        provisioner.terminate_nodes([node])
        assert local_provisioner._start_time(pid) is None  # gone (or a zombie)
        assert provisioner.get_provisioned_workers() == []
    finally:
        provisioner.destroy_cluster()


# --- end to end ---------------------------------------------------------------------------


def cloud_slurmd_running(cluster: SlurmCluster) -> set[str]:
    """The cloud nodes whose slurmd process runs (read in /proc, whoever started it)."""
    running = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"slurmd") and b"-N" in argv:
            name = argv[argv.index(b"-N") + 1].decode()
            if name in cluster.cloud_node_names:
                running.add(name)
    return running


@pytest.fixture
def powered_down(elastic_slurm_cluster: SlurmCluster) -> SlurmCluster:
    """The cloud nodes powered down before the test."""
    cluster = elastic_slurm_cluster

    def all_down() -> bool:
        return all(
            "POWERED_DOWN" in node_state(cluster, name)[0] for name in cluster.cloud_node_names
        ) and not cloud_slurmd_running(cluster)

    wait_for(all_down, "the cloud nodes to be powered down", 120)
    return cluster


@pytest.mark.slow
def test_jobfleet_run_resumes_cloud_nodes_and_slurm_suspends_them_when_idle(
    powered_down: SlurmCluster, tmp_path: Path
) -> None:
    cluster = powered_down
    marks = tmp_path / "marks"
    marks.mkdir()
    # 3 cores each: the static node (8 CPUs) runs 2 at once, so the rest need the cloud nodes
    # (4 CPUs, one task each).
    tasks = "".join(
        f"  - name: t{n}\n"
        f"    command: echo $SLURMD_NODENAME > {marks}/{n}; sleep 4\n"
        "    resources: {cores: 3, memory: 200M}\n"
        for n in range(12)
    )
    (tmp_path / "tasks.yaml").write_text(f"tasks:\n{tasks}")
    program = shutil.which("jobfleet")
    assert program
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JOBFLEET_", "SLURM_"))}
    environ.update(cluster.env, JOBFLEET_SLURM_POLL_MIN="0.5", JOBFLEET_SLURM_POLL_MAX="2")
    started = time.monotonic()
    result = subprocess.run(
        [program, "run", "--cluster", "slurm", "--json", "tasks.yaml"], cwd=tmp_path,
        env=environ, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    ran = time.monotonic() - started
    power_log = cluster.log_path("jobfleet-power")
    assert result.returncode == 0, f"{result.stderr}\n{power_log.read_text()}"
    summary = json.loads(result.stdout)
    assert summary["state_counts"] == {"D": 12}
    where = {path.read_text().strip() for path in marks.iterdir()}
    assert len(list(marks.iterdir())) == 12
    assert set(cluster.cloud_node_names) <= where, f"tasks ran on {sorted(where)}"
    text = power_log.read_text()
    for name in cluster.cloud_node_names:
        assert f"resume: {name} launched" in text

    # Idle for SuspendTime, the nodes are suspended: their slurmd stopped, Slurm says so.
    def suspended() -> bool:
        return not cloud_slurmd_running(cluster) and all(
            "POWERED_DOWN" in node_state(cluster, name)[0] for name in cluster.cloud_node_names
        )

    wait_for(suspended, "the idle cloud nodes to be suspended", 120)
    text = power_log.read_text()
    assert "suspend: terminating" in text
    assert " ERROR " not in text, text
    print(f"12 tasks on resumed nodes in {ran:.0f} s; suspended {time.monotonic() - started:.0f} s"
          " after the start")  # fmt: skip
