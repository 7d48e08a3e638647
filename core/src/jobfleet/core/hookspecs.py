"""Every hook a jobfleet plugin may implement, in one place.

A plugin is a module named by an entry point in the group `jobfleet.plugins`; the entry point's
name is the cluster type (`slurm`, `kubernetes`, …). The module defines functions with the names
below. The three `get_cluster_*_class` hooks are required and carry Jobmon's names, so a module
written for Jobmon is a valid plugin as it is. The `@hookimpl` marker is optional: a function
whose name is a hook's name is taken as its implementation, the way pytest takes `pytest_*`.

Every hook is called for one cluster type at a time: a plugin answers for itself only. Keep the
module's import cheap and silent and import heavy client libraries inside the hook functions.

`docs/hooks.md` documents each hook with its exact signature; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue, ClusterWorkerNode
from jobfleet.core.hook_marker import PROJECT_NAME as PROJECT_NAME
from jobfleet.core.hook_marker import hookimpl as hookimpl  # pluggy's marker, without pluggy

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

REQUIRED_HOOKS = (
    "get_cluster_queue_class",
    "get_cluster_distributor_class",
    "get_cluster_worker_node_class",
)


@hookspec(firstresult=True)
def get_cluster_queue_class() -> type[ClusterQueue]:  # type: ignore[empty-body]
    """Return the plugin's `ClusterQueue` class (required)."""


@hookspec(firstresult=True)
def get_cluster_distributor_class() -> type[ClusterDistributor]:  # type: ignore[empty-body]
    """Return the plugin's `ClusterDistributor` class (required)."""


@hookspec(firstresult=True)
def get_cluster_worker_node_class() -> type[ClusterWorkerNode]:  # type: ignore[empty-body]
    """Return the plugin's `ClusterWorkerNode` class (required)."""


@hookspec(firstresult=True)
def get_cluster_settings_class() -> type | None:
    """Return the plugin's settings: a frozen dataclass built with `jobfleet.core.settings.setting`.

    Optional. Every field needs a default and help text; the core turns each field into a CLI
    option `--<cluster>-<field>` and an environment variable `JOBFLEET_<CLUSTER>_<FIELD>`, and the
    host passes the resolved instance to the distributor as the keyword argument `settings`.
    """


@hookspec(firstresult=True)
def get_cluster_version_info() -> Mapping[str, str]:  # type: ignore[empty-body]
    """Return versions worth showing beside the plugin's own, e.g. `{"kubernetes": "37.1.0"}`.

    Optional; shown by `jobfleet --version`. It may import the client library, but it must not
    contact a server: it runs on every `--version`.
    """


@hookspec(firstresult=True)
def get_cluster_queues(settings: Any) -> Mapping[str, Mapping[str, Any]] | None:
    """Return the cluster's own queues: `{name: queue parameters}` (limits and defaults).

    Optional; `jobfleet queues sync --cluster NAME` writes them to the ledger. `settings` is the
    plugin's resolved settings instance (None without settings). It may contact the cluster
    (e.g. Slurm's `scontrol show partition`); raise an exception with a clear message if it
    cannot be reached.
    """


@hookspec(firstresult=True)
def get_provisioner_class() -> type | None:
    """Return the plugin's provisioner class, fitting `jobfleet.core.scaling.Provisioner`.

    Optional. A module may define only this hook (and optionally `get_cluster_settings_class`
    and `get_cluster_version_info`): it is then a provisioner, not a backend, and
    `jobfleet run --autoscale --provisioner NAME` uses it under its entry point's name. The
    class is built as `Provisioner(cluster_name, settings=<settings instance>, **parameters)`.
    """
