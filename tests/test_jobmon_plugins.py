"""Jobmon 3.4.8's own plugin modules, loaded as jobfleet plugins through real entry points.

jobfleet follows Jobmon's plugin protocol; these are the plugins that protocol was written for,
so jobfleet's load-time check must take them as they are. They come from the test-only
dependency group `jobmon` (jobmon_core 3.4.8, and jobmon_client, which the sequential and dummy
distributor modules import). Nothing of Jobmon is configured: importing the modules needs no
configuration, and the check never instantiates a class.
"""

from __future__ import annotations

import inspect

import pytest

from jobfleet.core.cluster_protocol import ClusterWorkerNode
from jobfleet.core.plugins import PluginRegistry, PluginStatus

pytest.importorskip(
    "jobmon.plugins.multiprocess",
    reason="needs the `jobmon` dependency group (uv sync --all-groups)",
)

# Named apart from jobfleet-jobmon's own `jobmon_multiprocess` (the adapter that runs Jobmon's
# plugin under `jobfleet run`): two distributions claiming one name would both be refused.
JOBMON_PLUGINS = {
    "jobmon_raw_multiprocess": "jobmon.plugins.multiprocess",
    "jobmon_raw_sequential": "jobmon.plugins.sequential",
    "jobmon_raw_dummy": "jobmon.plugins.dummy",
}


@pytest.fixture
def registry(install_plugin) -> PluginRegistry:
    """A registry that finds Jobmon's modules through an installed distribution's entry points."""
    install_plugin("jobmon-builtins-for-jobfleet", {}, JOBMON_PLUGINS)
    return PluginRegistry(environ={"JOBFLEET_LOAD_PLUGINS": ",".join(JOBMON_PLUGINS)})


def test_jobmons_own_plugins_load_as_ok(registry: PluginRegistry) -> None:
    listing = {info.name: info for info in registry.list_plugins() if info.name in JOBMON_PLUGINS}
    found = {name: (info.status, info.error) for name, info in listing.items()}
    assert found == dict.fromkeys(JOBMON_PLUGINS, (PluginStatus.OK, None))
    for name, module in JOBMON_PLUGINS.items():
        plugin = registry.get_cluster(name)
        assert plugin.module.__name__ == module
        assert plugin.distribution == "jobmon-builtins-for-jobfleet"
        for cls in (plugin.queue_class, plugin.distributor_class, plugin.worker_node_class):
            assert cls.__module__.startswith(module + "."), cls


@pytest.mark.parametrize("name", sorted(JOBMON_PLUGINS))
def test_the_wrapper_path_loads_their_worker_nodes(registry: PluginRegistry, name: str) -> None:
    # What the worker-node wrapper calls: the worker node alone, checked against its protocol.
    node_class = registry.get_worker_node_class(name)
    assert node_class.__module__.startswith(JOBMON_PLUGINS[name] + ".")
    assert ClusterWorkerNode not in node_class.__mro__  # Jobmon's own protocol class, not ours


@pytest.mark.parametrize("name", ["jobmon_raw_sequential", "jobmon_raw_dummy"])
def test_static_methods_are_what_these_worker_nodes_have(
    registry: PluginRegistry, name: str
) -> None:
    # Why the check binds static methods without a self: these two are written that way.
    node_class = registry.get_cluster(name).worker_node_class
    for member in ("get_exit_info", "get_usage_stats"):
        assert isinstance(inspect.getattr_static(node_class, member), staticmethod), member


def test_the_bridges_adapter_loads_through_its_installed_entry_point() -> None:
    # jobfleet-jobmon's `jobmon_multiprocess`: Jobmon's plugin, adapted to start jobfleet's
    # wrapper (bridges/jobmon/tests/test_reverse.py runs it under `jobfleet run`).
    registry = PluginRegistry(environ={"JOBFLEET_LOAD_PLUGINS": "jobmon_multiprocess"})
    (info,) = [i for i in registry.list_plugins() if i.name == "jobmon_multiprocess"]
    assert (info.status, info.error, info.distribution) == (
        PluginStatus.OK,
        None,
        "jobfleet-jobmon",
    )
    plugin = registry.get_cluster("jobmon_multiprocess")
    jobmon_base = plugin.distributor_class.__mro__[1]
    assert jobmon_base.__module__ == "jobmon.plugins.multiprocess.multiproc_distributor"
    node_class = PluginRegistry().get_worker_node_class("jobmon_multiprocess")
    assert node_class.__mro__[1].__name__ == "MultiprocessWorkerNode"
