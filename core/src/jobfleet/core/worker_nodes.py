"""The worker-node class of a cluster type, found without pluggy (the wrapper's fast path).

A plugin declares, next to its `jobfleet.plugins` entry point, one in the group
`jobfleet.worker_nodes` naming its worker-node class:

    [project.entry-points."jobfleet.worker_nodes"]
    dummy = "jobfleet.plugins.dummy.worker_node:DummyWorkerNode"

The wrapper, which starts around every task, then imports that class alone: not the plugin
module, its hooks, pluggy, `jobfleet.core.plugins` or `importlib.metadata`. The host still
loads and validates the whole plugin through pluggy (`jobfleet.core.plugins`), and
`tests/test_discovery.py` checks that both ways give the same class.

`find_worker_node_class` answers None whenever it cannot answer exactly as the full discovery
would: no such entry point (an older plugin), no `jobfleet.plugins` entry of that name, a name
claimed by two distributions, a plugin disabled or left out by `JOBFLEET_DISABLE_PLUGINS` /
`JOBFLEET_LOAD_PLUGINS`, an invalid name, a class that fails to import or lacks a member. The
caller then takes the pluggy path, which explains the failure.
"""

from __future__ import annotations

import os

from jobfleet.core.entry_point_scan import scan_entry_points

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobfleet.core.worker_node_protocol import ClusterWorkerNode

__all__ = ["WORKER_NODE_GROUP", "find_worker_node_class"]

WORKER_NODE_GROUP = "jobfleet.worker_nodes"
_PLUGIN_GROUP = "jobfleet.plugins"  # jobfleet.core.plugins.ENTRY_POINT_GROUP, without importing it

# What the wrapper uses of a worker node; the signatures are the host's to check (with inspect).
_MEMBERS = ("distributor_id", "array_step_id", "get_usage_stats", "get_exit_info")
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz")
_NAME_REST = _NAME_FIRST | frozenset("0123456789_")


def find_worker_node_class(
    name: str, environ: Mapping[str, str] | None = None
) -> type[ClusterWorkerNode] | None:
    """The worker-node class the plugin `name` declares in `jobfleet.worker_nodes`, or None
    when only the full discovery can answer (see the module's docstring)."""
    env = os.environ if environ is None else environ
    if not _valid_name(name) or _blocked(name, env):
        return None
    found = scan_entry_points((WORKER_NODE_GROUP, _PLUGIN_GROUP), name)
    entry = found[WORKER_NODE_GROUP]
    if entry is None or found[_PLUGIN_GROUP] is None:
        return None
    try:
        loaded = entry.load()
    except Exception:  # the pluggy path imports the plugin again and reports the error
        return None
    if not isinstance(loaded, type) or getattr(loaded, "__abstractmethods__", None):
        return None
    if not all(hasattr(loaded, member) for member in _MEMBERS):
        return None
    return loaded


def _valid_name(name: str) -> bool:
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name[1:])


def _blocked(name: str, env: Mapping[str, str]) -> bool:
    """Whether the registry would refuse `name` for the plugin variables (same reading)."""
    disabled = _names(env.get("JOBFLEET_DISABLE_PLUGINS"))
    only = _names(env.get("JOBFLEET_LOAD_PLUGINS"))
    return (disabled is not None and name in disabled) or (only is not None and name not in only)


def _names(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset(part.strip() for part in text.split(",") if part.strip())
