"""Every jobfleet backend as a Jobmon cluster type.

Jobmon finds its plugins by importing every module of the `jobmon.plugins` namespace, in every
Jobmon process, and picks `jobmon.plugins.<cluster_type>`. This distribution ships one such
module per built-in backend (`jobmon.plugins.jobfleet_slurm`, …), each three lines:

    \"\"\"Jobmon cluster type `jobfleet_mine`: the jobfleet backend `mine`.\"\"\"
    from jobfleet.jobmon import make_plugin
    globals().update(make_plugin("mine"))

A third-party jobfleet backend opts in with the same three lines in its own
`jobmon/plugins/jobfleet_<name>/__init__.py` (no `__init__.py` in `jobmon/` or
`jobmon/plugins/`: both are namespaces). Importing this module, and so every such plugin module,
imports nothing beyond the standard library and prints nothing; the jobfleet backend and Jobmon
itself are imported when Jobmon first asks for a class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HOOK_NAMES", "make_plugin"]

HOOK_NAMES = (
    "get_cluster_queue_class",
    "get_cluster_distributor_class",
    "get_cluster_worker_node_class",
)
"""The functions Jobmon's `ClusterType(...).plugin` requires of a plugin module."""

_LOCK = threading.Lock()
_BUILT: dict[tuple[str, str], type] = {}


def make_plugin(backend: str) -> dict[str, Callable[[], type]]:
    """The three functions Jobmon's plugin loader wants, for the jobfleet backend `backend`.

    Each builds its class on first call (by composition over the backend's own class, see
    `jobfleet.jobmon.queue`, `.distributor` and `.worker_node`) and returns the same class
    afterwards. Nothing is imported here.
    """

    def get_cluster_queue_class() -> type:
        return _built(backend, "queue")

    def get_cluster_distributor_class() -> type:
        return _built(backend, "distributor")

    def get_cluster_worker_node_class() -> type:
        return _built(backend, "worker_node")

    return {
        "get_cluster_queue_class": get_cluster_queue_class,
        "get_cluster_distributor_class": get_cluster_distributor_class,
        "get_cluster_worker_node_class": get_cluster_worker_node_class,
    }


def _built(backend: str, role: str) -> type:
    with _LOCK:
        found = _BUILT.get((backend, role))
        if found is None:
            found = _BUILT[(backend, role)] = _build(backend, role)
        return found


def _build(backend: str, role: str) -> type:
    module: Any
    if role == "queue":
        from jobfleet.jobmon import queue as module
    elif role == "distributor":
        from jobfleet.jobmon import distributor as module
    else:
        from jobfleet.jobmon import worker_node as module
    built: type = module.build(backend)
    return built
