"""The scaler in the host: refusals, a run that scales up and releases, events, status, CLI."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from jobfleet.core import plugins as plugins_module
from jobfleet.core.cluster_protocol import NodeInfo
from jobfleet.core.errors import UnknownProvisionerError
from jobfleet.core.host.autoscale import AutoscaleError, AutoscaleOptions, instance_shape
from jobfleet.core.host.ledger import Event, Ledger, Run
from jobfleet.core.host.runs import ServiceOptions, create_run
from jobfleet.core.host.service import DistributorService
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.core.plugins import PluginRegistry
from jobfleet.core.resources import GIB
from jobfleet.core.testing.fake_provisioner import FakeProvisioner
from jobfleet.plugins import dummy
from jobfleet.plugins.dummy.distributor import DummyDistributor

pytest.importorskip("sqlalchemy")

FAST = ServiceOptions(poll_interval=0.01, max_poll_interval=0.05, heartbeat_interval=0.5)
LAUNCHED: list[FakeProvisioner] = []


class RecordingProvisioner(FakeProvisioner):
    def __init__(self, cluster_name: str, **kwargs: Any) -> None:
        super().__init__(cluster_name, **kwargs)
        LAUNCHED.append(self)


class ScalableDummy(DummyDistributor):
    """The dummy backend, with every node of the fake provider joined at once and idle."""

    def get_nodes(self) -> dict[str, NodeInfo]:
        return {
            name: NodeInfo(0.0, 0, 4.0, 16 * GIB)
            for provisioner in LAUNCHED
            for name in provisioner.live
        }

    def node_in_use(self, node: str) -> bool:
        return False

    def ignore_node(self, node: str) -> None:
        pass

    def unignore_node(self, node: str) -> None:
        pass


class _EntryPoint:
    def __init__(self, name: str, module: types.ModuleType) -> None:
        self.name, self.value, self._module = name, module.__name__, module

    def load(self) -> types.ModuleType:
        return self._module


def _modules() -> list[_EntryPoint]:
    elastic = types.ModuleType("elastic_backend")
    elastic.get_cluster_queue_class = dummy.get_cluster_queue_class  # type: ignore[attr-defined]
    elastic.get_cluster_distributor_class = lambda: ScalableDummy  # type: ignore[attr-defined]
    elastic.get_cluster_worker_node_class = dummy.get_cluster_worker_node_class  # type: ignore[attr-defined]
    cloud = types.ModuleType("fakecloud_provisioner")
    cloud.get_provisioner_class = lambda: RecordingProvisioner  # type: ignore[attr-defined]
    return [
        _EntryPoint("dummy", dummy),
        _EntryPoint("elastic", elastic),
        _EntryPoint("fakecloud", cloud),
    ]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> PluginRegistry:
    LAUNCHED.clear()
    found = PluginRegistry(_modules(), environ={})
    monkeypatch.setattr(plugins_module, "_default", found)
    return found


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


def options(**changes: Any) -> AutoscaleOptions:
    values: dict[str, Any] = {
        "provisioner": "fakecloud",
        "node_types": "medium",
        "max_nodes": "3",
        "interval": 0.01,
    }
    return AutoscaleOptions(**(values | changes))


def tasks(count: int) -> list[TaskDefinition]:
    return [
        TaskDefinition(name=f"t{i}", command="true", resources={"cores": 4, "runtime": 3000})
        for i in range(count)
    ]


def test_a_backend_that_cannot_drain_nodes_is_refused(ledger, registry, tmp_path):
    with pytest.raises(AutoscaleError, match=r"'dummy' cannot be autoscaled.*ScalableDistributor"):
        create_run(ledger, tasks(1), cluster="dummy", registry=registry, autoscale=options())
    with ledger.read_session() as session:
        assert session.scalars(select(Run)).all() == []


def test_an_unknown_provisioner_is_refused(ledger, registry):
    with pytest.raises(UnknownProvisionerError, match=r"'nope'.*installed: fakecloud"):
        create_run(
            ledger,
            tasks(1),
            cluster="elastic",
            registry=registry,
            autoscale=options(provisioner="nope"),
        )


def test_bad_counts_and_node_types_are_refused():
    with pytest.raises(AutoscaleError, match="one per node type"):
        options(node_types="a,b", max_nodes="1,2,3")
    with pytest.raises(AutoscaleError, match="not a count"):
        options(max_nodes="many")
    with pytest.raises(AutoscaleError, match="Node types"):
        options(node_types="a:-1")
    with pytest.raises(AutoscaleError, match="minimum"):
        options(min_nodes="5")


def test_shapes_come_from_the_requested_resources():
    shape = instance_shape({"cores": 2, "memory": "3G", "runtime": 600, "preemptible": "yes"})
    assert (shape.cores, shape.memory, shape.wall_time, shape.preemptible) == (
        2,
        3 * GIB,
        600,
        True,
    )
    assert instance_shape({}).memory == GIB  # nothing asked: one core, 1G, runtime unknown
    assert instance_shape({}).wall_time == 0


def test_an_autoscaled_run_launches_nodes_records_why_and_releases_them(ledger, registry):
    run_id = create_run(
        ledger,
        tasks(3),
        cluster="elastic",
        registry=registry,
        options=FAST,
        autoscale=options(),
    )
    service = DistributorService(ledger, run_id, registry=registry)
    service.start()
    try:
        progress = service.run_until_done()
    finally:
        service.close()
    assert progress.status == "done"
    [provisioner] = LAUNCHED
    assert provisioner.cluster_name == f"elastic-run-{run_id}"
    assert provisioner.live == {}  # released when the run ended
    added = [c for c in provisioner.calls if c[0] == "add_nodes"]
    assert added[0][1] == ("medium", 3, False)
    with ledger.read_session() as session:
        scaling = session.scalars(
            select(Event).where(Event.run_id == run_id, Event.kind == "scaling").order_by(Event.id)
        ).all()
        run = session.get_one(Run, run_id)
        view = run.options["scaler_view"]
        stored = run.options["autoscale"]
    assert scaling[0].message == "3 × medium (on-demand) for 3 waiting tasks"
    assert scaling[0].task_instance_id is None
    assert scaling[-1].details["action"] in {"scale_down", "release"}  # whichever came first
    assert stored["node_types"] == "medium"
    assert view["provisioner"] == "fakecloud"
    assert view["nodes"] == []  # the last view: every node gone


def test_status_shows_the_nodes(ledger, registry, tmp_path):
    from jobfleet.core.cli.app import cli

    run_id = create_run(
        ledger, tasks(2), cluster="elastic", registry=registry, options=FAST, autoscale=options()
    )
    service = DistributorService(ledger, run_id, registry=registry)
    service.start()
    try:
        service.round()
    finally:
        service.request_stop()
        service.close()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    shown = CliRunner().invoke(cli, ["status", str(run_id), "--json", "--ledger", url])
    assert shown.exit_code == 0, shown.output
    nodes = json.loads(shown.output)["nodes"]["nodes"]
    assert len(nodes) == 2
    assert {n["state"] for n in nodes} == {"launching"}  # joined is seen at the next step
    text = CliRunner().invoke(cli, ["status", str(run_id), "--ledger", url])
    assert "medium" in text.output
    assert "launching" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provisioner", "fakecloud"], "only apply with --autoscale"),
        (["--autoscale", "--provisioner", "fakecloud"], "needs --node-types, --max-nodes"),
        (
            [
                "--autoscale",
                "--provisioner",
                "fakecloud",
                "--node-types",
                "medium",
                "--max-nodes",
                "2",
            ],
            "'dummy' cannot be autoscaled",
        ),
        (
            [
                "--cluster",
                "elastic",
                "--autoscale",
                "--provisioner",
                "nope",
                "--node-types",
                "m",
                "--max-nodes",
                "2",
            ],
            "No jobfleet plugin provides a provisioner named 'nope'",
        ),
        (
            [
                "--cluster",
                "elastic",
                "--autoscale",
                "--provisioner",
                "fakecloud",
                "--node-types",
                "m:x",
                "--max-nodes",
                "2",
            ],
            "spot bid that is not a positive number",
        ),
    ],
)
def test_cli_refusals(registry, tmp_path, args, message):
    from jobfleet.core.cli import app

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = CliRunner().invoke(
        app.cli, ["run", "--cluster", "dummy", *args, "--ledger", url, "--", "true"]
    )
    assert result.exit_code != 0
    assert message in (result.output + str(result.exception)), result.output
