"""Discovery through real installed distributions: good, broken, disabled, conflicting plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from jobfleet.core import plugins as plugins_module
from jobfleet.core.errors import PluginLoadError, UnknownClusterError
from jobfleet.core.plugins import PluginRegistry, PluginStatus

# Hooks written as plain functions, the way a Jobmon plugin module is written (no marker).
JOBMON_STYLE_HOOKS = textwrap.dedent("""
    from {impl} import Queue, Distributor, WorkerNode

    def get_cluster_queue_class():
        return Queue

    def get_cluster_distributor_class():
        return Distributor

    def get_cluster_worker_node_class():
        return WorkerNode
""")


def statuses(registry: PluginRegistry) -> dict[str, PluginStatus]:
    return {info.name: info.status for info in registry.list_plugins()}


def test_jobmon_style_module_without_markers_is_a_plugin(install_plugin, good_plugin):
    install_plugin(
        "jobfleet-jobmonish",
        {"jm_impl": good_plugin, "jm_plugin": JOBMON_STYLE_HOOKS.format(impl="jm_impl")},
        {"jobmonish": "jm_plugin"},
    )
    plugin = PluginRegistry(environ={}).get_cluster("jobmonish")
    assert plugin.distributor_class.__name__ == "Distributor"
    assert plugin.distribution == "jobfleet-jobmonish"
    assert plugin.version == "1.0"
    assert plugin.settings_class is None


def test_plugin_raising_at_import_is_broken_and_others_still_work(install_plugin):
    install_plugin(
        "jobfleet-exploding",
        {"exploding_plugin": "raise RuntimeError('kaboom')"},
        {"exploding": "exploding_plugin"},
    )
    registry = PluginRegistry(environ={})
    listing = {info.name: info for info in registry.list_plugins()}
    assert listing["exploding"].status is PluginStatus.BROKEN
    assert "RuntimeError: kaboom" in listing["exploding"].error
    assert listing["exploding"].distribution == "jobfleet-exploding"
    assert listing["dummy"].status is PluginStatus.OK
    with pytest.raises(PluginLoadError, match="kaboom"):
        registry.get_cluster("exploding")
    assert registry.get_cluster("dummy").name == "dummy"


def test_plugin_calling_sys_exit_at_import_does_not_end_the_host(install_plugin):
    install_plugin(
        "jobfleet-quitter",
        {"quitter_plugin": "import sys; sys.exit(3)"},
        {"quitter": "quitter_plugin"},
    )
    with pytest.raises(PluginLoadError, match="SystemExit"):
        PluginRegistry(environ={}).get_cluster("quitter")


def test_missing_required_hook_is_named(install_plugin):
    source = "def get_cluster_queue_class():\n    return object\n"
    install_plugin("jobfleet-partial", {"partial_plugin": source}, {"partial": "partial_plugin"})
    with pytest.raises(PluginLoadError) as caught:
        PluginRegistry(environ={}).get_cluster("partial")
    assert "get_cluster_distributor_class" in str(caught.value)
    assert "get_cluster_worker_node_class" in str(caught.value)


def test_class_breaking_the_protocol_is_refused_at_load(install_plugin, good_plugin):
    bad = (
        good_plugin
        + """
    class Distributor(Distributor):
        def submit_to_batch_distributor(self, command):  # lost two parameters
            return "1"
    """
    )
    install_plugin(
        "jobfleet-wrongsig",
        {"ws_impl": bad, "ws_plugin": JOBMON_STYLE_HOOKS.format(impl="ws_impl")},
        {"wrongsig": "ws_plugin"},
    )
    with pytest.raises(PluginLoadError, match="submit_to_batch_distributor"):
        PluginRegistry(environ={}).get_cluster("wrongsig")


def test_abstract_member_left_unwritten_is_refused(install_plugin, good_plugin):
    bad = (
        good_plugin
        + """
    class WorkerNode(ClusterWorkerNode):
        def __init__(self): pass
        distributor_id = None
        array_step_id = None
        def get_exit_info(self, exit_code, error_msg): return ("D", "")
    """
    )
    install_plugin(
        "jobfleet-abstract",
        {"ab_impl": bad, "ab_plugin": JOBMON_STYLE_HOOKS.format(impl="ab_impl")},
        {"abstract": "ab_plugin"},
    )
    with pytest.raises(PluginLoadError, match="get_usage_stats"):
        PluginRegistry(environ={}).get_cluster("abstract")


def test_hook_returning_a_non_class_is_refused(install_plugin, good_plugin):
    source = (
        JOBMON_STYLE_HOOKS.format(impl="nc_impl")
        + "\ndef get_cluster_queue_class():\n    return 42\n"
    )
    install_plugin(
        "jobfleet-nonclass",
        {"nc_impl": good_plugin, "nc_plugin": source},
        {"nonclass": "nc_plugin"},
    )
    with pytest.raises(PluginLoadError, match="expected a class implementing ClusterQueue"):
        PluginRegistry(environ={}).get_cluster("nonclass")


def test_hook_raising_is_recorded(install_plugin, good_plugin):
    source = JOBMON_STYLE_HOOKS.format(impl="hr_impl") + (
        "\ndef get_cluster_worker_node_class():\n    raise ImportError('no client library')\n"
    )
    install_plugin(
        "jobfleet-hookraise",
        {"hr_impl": good_plugin, "hr_plugin": source},
        {"hookraise": "hr_plugin"},
    )
    registry = PluginRegistry(environ={})
    info = next(i for i in registry.list_plugins() if i.name == "hookraise")
    assert info.status is PluginStatus.BROKEN
    assert "get_cluster_worker_node_class() raised ImportError: no client library" in info.error


@pytest.mark.parametrize(
    ("settings_source", "message"),
    [
        ("@dataclass(frozen=True)\nclass S:\n    x: int = 1\n", "has no help text"),
        (
            "@dataclass(frozen=True)\nclass S:\n    x: int = setting(help='an x')\n",
            "has no default",
        ),
        ("@dataclass\nclass S:\n    x: int = setting(1, help='an x')\n", "must be frozen"),
        (
            "@dataclass(frozen=True)\nclass S:\n    x: list = setting(None, help='x')\n",
            "cannot be read",
        ),
        ("class S:\n    x = 1\n", "must be a dataclass"),
    ],
)
def test_bad_settings_class_makes_the_plugin_broken(
    install_plugin, good_plugin, settings_source, message
):
    module = f"bs_{abs(hash(settings_source))}"  # modules stay in sys.modules: one name per case
    source = (
        JOBMON_STYLE_HOOKS.format(impl=f"{module}_impl")
        + "\nfrom dataclasses import dataclass\nfrom jobfleet.core.settings import setting\n"
        + settings_source
        + "\ndef get_cluster_settings_class():\n    return S\n"
    )
    install_plugin(
        "jobfleet-badsettings",
        {f"{module}_impl": good_plugin, module: source},
        {"badsettings": module},
    )
    with pytest.raises(PluginLoadError, match=message):
        PluginRegistry(environ={}).get_cluster("badsettings")


def test_unknown_name_lists_installed_and_suggests_install():
    with pytest.raises(UnknownClusterError) as caught:
        PluginRegistry(environ={}).get_cluster("slurmx")
    message = str(caught.value)
    assert "dummy" in message
    assert "pip install jobfleet-slurmx" in message


def test_disable_plugins_blocks_without_importing(install_plugin):
    install_plugin(
        "jobfleet-boom2",
        {"boom2_plugin": "raise RuntimeError('imported!')"},
        {"boom2": "boom2_plugin"},
    )
    registry = PluginRegistry(environ={"JOBFLEET_DISABLE_PLUGINS": "boom2, other"})
    info = next(i for i in registry.list_plugins() if i.name == "boom2")
    assert info.status is PluginStatus.DISABLED
    assert "JOBFLEET_DISABLE_PLUGINS" in info.error
    with pytest.raises(UnknownClusterError, match="disabled by JOBFLEET_DISABLE_PLUGINS"):
        registry.get_cluster("boom2")


def test_load_plugins_loads_only_those(install_plugin):
    install_plugin(
        "jobfleet-boom3",
        {"boom3_plugin": "raise RuntimeError('imported!')"},
        {"boom3": "boom3_plugin"},
    )
    registry = PluginRegistry(environ={"JOBFLEET_LOAD_PLUGINS": "dummy"})
    assert statuses(registry)["boom3"] is PluginStatus.DISABLED
    assert statuses(registry)["dummy"] is PluginStatus.OK
    with pytest.raises(UnknownClusterError, match="not in JOBFLEET_LOAD_PLUGINS"):
        registry.get_cluster("boom3")


def test_loading_is_lazy_and_cached(install_plugin, good_plugin):
    counter = textwrap.dedent("""
        import builtins
        builtins.lazy_imports = getattr(builtins, "lazy_imports", 0) + 1
    """)
    install_plugin(
        "jobfleet-lazy",
        {"lz_impl": good_plugin, "lz_plugin": counter + JOBMON_STYLE_HOOKS.format(impl="lz_impl")},
        {"lazy": "lz_plugin"},
    )
    import builtins

    registry = PluginRegistry(environ={})
    assert "lazy" in registry.names()
    assert not hasattr(builtins, "lazy_imports"), "listing names must not import plugins"
    registry.get_cluster("dummy")
    assert not hasattr(builtins, "lazy_imports"), "loading one plugin must not import another"
    first = registry.get_cluster("lazy")
    assert registry.get_cluster("lazy") is first
    assert builtins.lazy_imports == 1
    del builtins.lazy_imports


def test_two_distributions_claiming_one_name_are_both_refused(
    install_plugin, plugin_site, good_plugin
):
    install_plugin("jobfleet-twin-a", {"twin_a": good_plugin}, {"twin": "twin_a"})
    install_plugin("jobfleet-twin-b", {"twin_b": good_plugin}, {"twin": "twin_b"})
    with pytest.raises(PluginLoadError, match="two installed distributions claim it"):
        PluginRegistry(environ={}).get_cluster("twin")


def test_invalid_cluster_name_is_refused(install_plugin, good_plugin):
    install_plugin(
        "jobfleet-badname",
        {"bn_impl": good_plugin, "bn_plugin": JOBMON_STYLE_HOOKS.format(impl="bn_impl")},
        {"Bad-Name": "bn_plugin"},
    )
    with pytest.raises(PluginLoadError, match="lower-case letters"):
        PluginRegistry(environ={}).get_cluster("Bad-Name")


def test_trace_prints_every_hook_call(capsys):
    registry = PluginRegistry(environ={"JOBFLEET_TRACE_PLUGINS": "1"})
    registry.get_cluster("dummy")
    err = capsys.readouterr().err
    for hook in (
        "get_cluster_queue_class",
        "get_cluster_distributor_class",
        "get_cluster_worker_node_class",
        "get_cluster_settings_class",
    ):
        assert f"jobfleet: calling {hook}() of dummy" in err
        assert f"jobfleet: {hook}() -> " in err


def test_no_trace_by_default(capsys):
    PluginRegistry(environ={}).get_cluster("dummy")
    assert capsys.readouterr().err == ""


def test_worker_node_class_loads_without_the_other_classes(install_plugin, good_plugin):
    hooks = textwrap.dedent("""
        import builtins

        def get_cluster_queue_class():
            builtins.heavy_queue_loaded = True
            from wo_impl import Queue
            return Queue

        def get_cluster_distributor_class():
            builtins.heavy_queue_loaded = True
            from wo_impl import Distributor
            return Distributor

        def get_cluster_worker_node_class():
            from wo_impl import WorkerNode
            return WorkerNode
    """)
    install_plugin(
        "jobfleet-workeronly",
        {"wo_impl": good_plugin, "wo_plugin": hooks},
        {"workeronly": "wo_plugin"},
    )
    import builtins

    registry = PluginRegistry(environ={})
    assert registry.get_worker_node_class("workeronly").__name__ == "WorkerNode"
    assert not hasattr(builtins, "heavy_queue_loaded")
    assert registry.get_cluster("workeronly").worker_node_class is registry.get_worker_node_class(
        "workeronly"
    )
    assert builtins.heavy_queue_loaded
    del builtins.heavy_queue_loaded


def test_worker_node_class_breaking_its_protocol_is_refused(install_plugin, good_plugin):
    bad = (
        good_plugin
        + """
    class WorkerNode:
        pass
    """
    )
    install_plugin(
        "jobfleet-badnode",
        {"bnode_impl": bad, "bnode_plugin": JOBMON_STYLE_HOOKS.format(impl="bnode_impl")},
        {"badnode": "bnode_plugin"},
    )
    with pytest.raises(PluginLoadError, match="get_usage_stats"):
        PluginRegistry(environ={}).get_worker_node_class("badnode")


def test_quick_scan_finds_what_importlib_metadata_finds():
    from importlib.metadata import entry_points

    from jobfleet.core.plugins import ENTRY_POINT_GROUP, scan_entry_point

    (dummy,) = entry_points(group=ENTRY_POINT_GROUP, name="dummy")
    scanned = scan_entry_point(ENTRY_POINT_GROUP, "dummy")
    assert scanned is not None
    assert scanned.value == dummy.value
    assert scanned.load() is dummy.load()
    assert scan_entry_point(ENTRY_POINT_GROUP, "nosuchplugin") is None


def test_quick_scan_leaves_a_conflict_to_the_full_discovery(install_plugin, good_plugin):
    from jobfleet.core.plugins import ENTRY_POINT_GROUP, scan_entry_point

    install_plugin("jobfleet-clash-a", {"clash_a": good_plugin}, {"clash": "clash_a"})
    install_plugin("jobfleet-clash-b", {"clash_b": good_plugin}, {"clash": "clash_b"})
    assert scan_entry_point(ENTRY_POINT_GROUP, "clash") is None
    with pytest.raises(PluginLoadError, match="two installed distributions claim it"):
        PluginRegistry(environ={}).get_worker_node_class("clash")


def test_worker_node_path_does_not_import_importlib_metadata():
    probe = (
        "import sys\n"
        "from jobfleet.core.plugins import get_worker_node_class\n"
        "get_worker_node_class('dummy')\n"
        "print('importlib.metadata' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "False"


def test_listing_after_the_quick_path_still_names_the_distribution():
    registry = PluginRegistry(environ={})
    registry.get_worker_node_class("dummy")
    plugin = registry.get_cluster("dummy")
    assert plugin.distribution == "jobfleet-dummy"
    assert plugin.version


# -- the wrapper's fast path: jobfleet.worker_nodes entry points (jobfleet.core.worker_nodes) --


def test_every_declared_worker_node_is_the_class_the_plugin_hook_gives():
    from jobfleet.core.worker_nodes import find_worker_node_class

    registry = PluginRegistry(environ={})
    declared = {name: find_worker_node_class(name, environ={}) for name in registry.names()}
    fast = {name: found for name, found in declared.items() if found is not None}
    # Every built-in backend with a worker node declares it (aws provisions only; the Jobmon
    # bridge builds its classes at run time and keeps the pluggy path).
    assert {"dummy", "kubernetes", "mesos", "multiprocess", "sequential", "slurm"} <= set(fast)
    for name, found in fast.items():
        assert found is registry.get_worker_node_class(name), name


def test_a_plugin_with_the_entry_point_is_loaded_without_its_module(install_plugin, good_plugin):
    from jobfleet.core.worker_nodes import find_worker_node_class

    hooks = JOBMON_STYLE_HOOKS.format(impl="fast_impl") + "\nraise RuntimeError('imported')\n"
    install_plugin(
        "jobfleet-fast",
        {"fast_impl": good_plugin, "fast_plugin": hooks},
        {"fast": "fast_plugin"},
        worker_nodes={"fast": "fast_impl:WorkerNode"},
    )
    found = find_worker_node_class("fast", environ={})
    assert found is not None
    assert found.__module__ == "fast_impl"
    assert "fast_plugin" not in sys.modules


def test_a_plugin_without_the_entry_point_falls_back_to_pluggy(
    install_plugin, good_plugin, monkeypatch
):
    from jobfleet.core.worker_nodes import find_worker_node_class
    from jobfleet.worker_node import cli

    install_plugin(
        "jobfleet-older",
        {"older_impl": good_plugin, "older_plugin": JOBMON_STYLE_HOOKS.format(impl="older_impl")},
        {"older": "older_plugin"},
    )
    assert find_worker_node_class("older", environ={}) is None
    monkeypatch.setattr(plugins_module, "_default", None, raising=False)
    node = cli._worker_node("older")
    assert type(node).__module__ == "older_impl"
    assert "older_plugin" in sys.modules  # loaded through its hooks


@pytest.mark.parametrize(
    ("environ", "declared"),
    [
        ({"JOBFLEET_DISABLE_PLUGINS": "gated"}, {"gated": "gated_impl:WorkerNode"}),
        ({"JOBFLEET_LOAD_PLUGINS": "other"}, {"gated": "gated_impl:WorkerNode"}),
        ({}, {"gated": "gated_impl:NoSuchClass"}),
        ({}, {"gated": "gated_impl:Queue"}),  # a class, but no worker node
        ({}, {"gated": "no_such_module:WorkerNode"}),
    ],
)
def test_what_only_the_full_discovery_can_answer_is_left_to_it(
    install_plugin, good_plugin, environ, declared
):
    from jobfleet.core.worker_nodes import find_worker_node_class

    install_plugin(
        "jobfleet-gated",
        {"gated_impl": good_plugin, "gated_plugin": JOBMON_STYLE_HOOKS.format(impl="gated_impl")},
        {"gated": "gated_plugin"},
        worker_nodes=declared,
    )
    assert find_worker_node_class("gated", environ=environ) is None
    assert find_worker_node_class("gated", environ={"JOBFLEET_LOAD_PLUGINS": "x"}) is None


def test_a_worker_node_entry_without_its_plugin_or_claimed_twice_is_left_to_pluggy(
    install_plugin, good_plugin
):
    from jobfleet.core.worker_nodes import find_worker_node_class

    install_plugin(
        "jobfleet-orphan",
        {"orphan_impl": good_plugin},
        {},
        worker_nodes={"orphan": "orphan_impl:WorkerNode"},
    )
    assert find_worker_node_class("orphan", environ={}) is None
    for suffix in ("a", "b"):
        install_plugin(
            f"jobfleet-twice-{suffix}",
            {f"twice_{suffix}": good_plugin},
            {"twice": f"twice_{suffix}"},
            worker_nodes={"twice": f"twice_{suffix}:WorkerNode"},
        )
    assert find_worker_node_class("twice", environ={}) is None
    with pytest.raises(PluginLoadError, match="two installed distributions claim it"):
        PluginRegistry(environ={}).get_worker_node_class("twice")


def test_the_fast_path_imports_neither_pluggy_nor_the_registry():
    probe = (
        "import sys\n"
        "from jobfleet.core.worker_nodes import find_worker_node_class\n"
        "assert find_worker_node_class('dummy').__name__ == 'DummyWorkerNode'\n"
        "print(sorted(m for m in ('pluggy', 'jobfleet.core.plugins', 'importlib.metadata',"
        " 'typing', 'dataclasses') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("options", [{}, {"tryfirst": True}, {"specname": "x", "trylast": True}])
def test_the_light_hook_marker_marks_as_pluggy_s_does(options):
    import pluggy

    from jobfleet.core.hook_marker import PROJECT_NAME, hookimpl

    def light() -> None: ...

    def real() -> None: ...

    (hookimpl(**options) if options else hookimpl)(light)
    pluggy.HookimplMarker(PROJECT_NAME)(**options)(real)
    attribute = f"{PROJECT_NAME}_impl"
    assert getattr(light, attribute) == getattr(real, attribute)
    manager = pluggy.PluginManager(PROJECT_NAME)
    assert manager.parse_hookimpl_opts(_Holder(light), "light") == getattr(real, attribute)


class _Holder:
    """A plugin object holding one function, for pluggy's parse_hookimpl_opts."""

    def __init__(self, function: object) -> None:
        self.light = function
