"""The local provisioner (Mesos emulator agents as nodes) passes the provisioner kit, and the
Mesos distributor sees its agents under the names the scaler expects."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.testing import ProvisionerTests


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local = _load("agent_provisioner")


class TestLocalAgentProvisioner(ProvisionerTests):
    node_type = "c2"

    @pytest.fixture
    def make_provisioner(self, mesos_cluster: Any) -> Callable[[str], Any]:
        return lambda cluster_name: local.LocalAgentProvisioner(
            cluster_name, emulator=mesos_cluster
        )

    @pytest.fixture
    def throttling_error(self) -> BaseException:
        return local.Throttled("slow down")


def test_nodes_are_agents_with_their_shape_and_marks(mesos_cluster: Any) -> None:
    mc = mesos_cluster
    provisioner = local.bound_provisioner_class(mc, spot_capacity=1)("mesos-run-7")
    try:
        [spot] = provisioner.add_nodes("c4", 2, preemptible=True, spot_bid=0.1)  # capacity 1
        [plain] = provisioner.add_nodes("c2", 1)
        agents = {a["hostname"]: a for a in mc.agents().values() if a["active"]}
        assert agents[spot.name]["total"]["cpus"] == 4
        assert agents[spot.name]["attributes"]["preemptible"] == "true"
        assert agents[plain.name]["total"]["cpus"] == 2
        assert "preemptible" not in agents[plain.name]["attributes"]
        assert {"agent-1", "agent-2"} <= set(agents)  # the fixture's own, not ours
        assert {n.name for n in provisioner.get_provisioned_workers()} == {spot.name, plain.name}
        shape = provisioner.get_node_shape("c4", preemptible=True)
        assert (shape.cores, shape.memory, shape.preemptible) == (4.0, 8192 * 2**20, True)
        provisioner.terminate_nodes([spot])
        assert not mc.agents()[mc.agent_id(spot.name)]["active"]
    finally:
        provisioner.destroy_cluster()
    assert provisioner.get_provisioned_workers() == []
