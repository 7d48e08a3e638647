"""Shapes, node types, user data, provisioner discovery and the kit against the fake."""

from __future__ import annotations

import math
import types

import pytest
import yaml

from jobfleet.core.errors import UnknownClusterError, UnknownProvisionerError
from jobfleet.core.plugins import PluginRegistry, PluginStatus
from jobfleet.core.scaling import (
    InstanceConfiguration,
    NodeType,
    NodeTypeError,
    Shape,
    format_node_types,
    parse_node_types,
    provisioner_problems,
)
from jobfleet.core.testing import ProvisionerTests
from jobfleet.core.testing.fake_provisioner import FakeProvisioner, Throttled

# -- Shape ------------------------------------------------------------------------------------


def test_shapes_order_by_wall_time_then_memory_cores_disk_preemptible():
    a = Shape(60, 2, 1, 0, False)
    assert Shape(30, 9, 9, 9, True) < a  # wall time first
    assert Shape(60, 1, 9, 9, True) < a  # then memory
    assert Shape(60, 2, 0.5, 9, True) < a  # then cores
    assert Shape(60, 2, 1, 0, False) < Shape(60, 2, 1, 1, False)  # then disk
    assert Shape(60, 2, 1, 0, False) < Shape(60, 2, 1, 0, True)  # then preemptible
    assert sorted([a, Shape(math.inf, 1, 1, 1, False), Shape(0, 1, 1, 1, False)])[0].wall_time == 0


def test_equal_shapes_hash_alike_and_differ_otherwise():
    assert Shape(60, 2, 1, 0, False) == Shape(60.0, 2, 1.0, 0, False)
    assert hash(Shape(60, 2, 1, 0, False)) == hash(Shape(60.0, 2, 1.0, 0, False))
    assert (
        len({Shape(60, 2, 1, 0, False), Shape(60, 2, 1, 0, True), Shape(60, 2, 1, 0, False, 1)})
        == 3
    )


def test_shape_refuses_negative_and_non_numbers():
    with pytest.raises(ValueError, match="memory"):
        Shape(0, -1, 1, 0, False)
    with pytest.raises(TypeError, match="cores"):
        Shape(0, 1, "2", 0, False)  # type: ignore[arg-type]
    assert Shape(math.inf, 1, 1, 0, False).wall_time == math.inf


# -- node types -------------------------------------------------------------------------------


def test_node_types_parse_with_and_without_bids():
    found = parse_node_types("c5.large:0.05, m5.xlarge")
    assert found == [NodeType("c5.large", 0.05), NodeType("m5.xlarge")]
    assert found[0].preemptible
    assert not found[1].preemptible
    assert format_node_types(found) == "c5.large:0.05,m5.xlarge"


@pytest.mark.parametrize(
    ("spec", "part", "problem"),
    [
        ("", "", "is empty"),
        ("c5.large,,m5", "", "empty entry"),
        ("c5.large:", "c5.large:", "spot bid"),
        ("c5.large:-1", "c5.large:-1", "spot bid"),
        ("c5.large:0", "c5.large:0", "spot bid"),
        ("c5.large:cheap", "c5.large:cheap", "spot bid"),
        (":0.5", ":0.5", "no node type name"),
        ("c5 large", "c5 large", "not a valid node type name"),
        ("c5.large/c5a.large", "c5.large/c5a.large", "alternatives"),
        ("a,a:0.1", "a:0.1", "already listed"),
    ],
)
def test_bad_node_types_name_the_part_and_the_accepted_form(spec, part, problem):
    with pytest.raises(NodeTypeError, match=problem) as caught:
        parse_node_types(spec)
    assert repr(part) in str(caught.value)
    assert "c5.large:0.05,m5.xlarge" in str(caught.value)


# -- user data --------------------------------------------------------------------------------


def test_user_data_renders_files_units_and_keys_as_cloud_config():
    config = InstanceConfiguration()
    tricky = 'line "one"\n\ttab \\ é ☃ 😀 \x01 \u2028 end: # not a comment'
    config.add_file("/etc/jobfleet/agent.env", tricky, 0o600)
    config.add_unit("jobfleet-agent.service", "[Service]\nExecStart=/bin/true\n")
    config.add_unit("idle.timer", "[Timer]\n", enable=False)
    config.add_ssh_public_key("ssh-ed25519 AAAAC3Nza me@host")
    text = config.render()
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    files = {f["path"]: f for f in data["write_files"]}
    assert files["/etc/jobfleet/agent.env"]["content"] == tricky
    assert files["/etc/jobfleet/agent.env"]["permissions"] == "0600"
    assert files["/etc/systemd/system/jobfleet-agent.service"]["content"].startswith("[Service]")
    assert data["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3Nza me@host"]
    assert ["systemctl", "enable", "--now", "jobfleet-agent.service"] in data["runcmd"]
    assert ["systemctl", "enable", "--now", "idle.timer"] not in data["runcmd"]


def test_user_data_refuses_bad_parts():
    config = InstanceConfiguration()
    with pytest.raises(ValueError, match="absolute"):
        config.add_file("relative/path", "")
    with pytest.raises(ValueError, match="octal"):
        config.add_file("/x", "", "rwx")
    with pytest.raises(ValueError, match="unit"):
        config.add_unit("../evil.service", "")
    with pytest.raises(ValueError, match="private key"):
        config.add_ssh_public_key("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert InstanceConfiguration().render() == "#cloud-config\n"


# -- discovery --------------------------------------------------------------------------------


class _EntryPoint:
    def __init__(self, name: str, module: types.ModuleType) -> None:
        self.name = name
        self.value = module.__name__
        self._module = module

    def load(self) -> types.ModuleType:
        return self._module


def _provisioner_module(cls: object = FakeProvisioner) -> types.ModuleType:
    module = types.ModuleType("fake_provisioner_plugin")
    module.get_provisioner_class = lambda: cls  # type: ignore[attr-defined]
    return module


def test_a_provisioner_only_plugin_is_found_and_listed():
    registry = PluginRegistry([_EntryPoint("fakecloud", _provisioner_module())], environ={})
    plugin = registry.get_provisioner("fakecloud")
    assert plugin.provisioner_class is FakeProvisioner
    assert registry.provisioner_names() == ["fakecloud"]
    [info] = registry.list_plugins()
    assert info.status is PluginStatus.OK
    assert info.kinds == ("provisioner",)
    assert info.to_dict()["kinds"] == ["provisioner"]
    with pytest.raises(UnknownClusterError, match="is a provisioner, not a backend"):
        registry.get_cluster("fakecloud")


def test_an_unknown_provisioner_lists_the_installed_ones():
    registry = PluginRegistry([_EntryPoint("fakecloud", _provisioner_module())], environ={})
    with pytest.raises(UnknownProvisionerError, match=r"'nope'.*installed: fakecloud"):
        registry.get_provisioner("nope")


def test_a_provisioner_that_does_not_fit_is_broken():
    class Half:
        def add_nodes(self, node_type):  # missing count and most members
            return []

    registry = PluginRegistry([_EntryPoint("half", _provisioner_module(Half))], environ={})
    [info] = registry.list_plugins()
    assert info.status is PluginStatus.BROKEN
    assert "terminate_nodes" in (info.error or "")


def test_the_fake_fits_the_protocol():
    assert provisioner_problems(FakeProvisioner) == []


def test_jobfleet_plugins_lists_what_each_plugin_provides(monkeypatch):
    import json

    from click.testing import CliRunner

    from jobfleet.core import plugins as plugins_module
    from jobfleet.core.cli.app import cli

    registry = PluginRegistry([_EntryPoint("fakecloud", _provisioner_module())], environ={})
    monkeypatch.setattr(plugins_module, "_default", registry)
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "name": "fakecloud",
            "kinds": ["provisioner"],
            "distribution": None,
            "version": None,
            "entry_point": "fake_provisioner_plugin",
            "status": "ok",
            "error": None,
        }
    ]
    shown = CliRunner().invoke(cli, ["plugins", "fakecloud", "--json"])
    assert json.loads(shown.output)["provisioner_class"].endswith("FakeProvisioner")


# -- the kit against the fake ----------------------------------------------------------------


class TestFakeProvisionerConformance(ProvisionerTests):
    node_type = "small"

    @pytest.fixture
    def make_provisioner(self):
        return lambda cluster_name: FakeProvisioner(cluster_name)

    @pytest.fixture
    def throttling_error(self):
        return Throttled("slow down")
