"""Fixtures shared by the cross-package tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where tests install distributions (dist-info and modules)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def install_plugin(plugin_site: Path) -> Callable[..., Path]:
    """Install a distribution that declares `jobfleet.plugins` entry points, for real.

    It writes the modules and a `.dist-info` folder with METADATA and entry_points.txt, which
    is what pip leaves behind; importlib.metadata finds it like any installed distribution.
    """

    def install(
        distribution: str,
        modules: Mapping[str, str],
        entry_points: Mapping[str, str],
        version: str = "1.0",
        worker_nodes: Mapping[str, str] | None = None,
    ) -> Path:
        for module, source in modules.items():
            path = plugin_site.joinpath(*module.split(".")).with_suffix(".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        info = plugin_site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        info.joinpath("METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        text = f"[jobfleet.plugins]\n{lines}"
        if worker_nodes is not None:  # the wrapper's own entry points (jobfleet.core.worker_nodes)
            text += "\n[jobfleet.worker_nodes]\n"
            text += "".join(f"{name} = {value}\n" for name, value in worker_nodes.items())
        info.joinpath("entry_points.txt").write_text(text)
        return plugin_site

    return install


@pytest.fixture
def good_plugin() -> str:
    """Source of a module with a minimal but complete queue, distributor and worker node."""
    return GOOD_PLUGIN


GOOD_PLUGIN = """
    from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterWorkerNode
    from jobfleet.core.exit_info import RemoteExitInfo
    from jobfleet.core.queue import BaseClusterQueue

    class Queue(BaseClusterQueue):
        pass

    class Distributor(ClusterDistributor):
        def __init__(self, cluster_name, *args, **kwargs):
            self.cluster_name = cluster_name

        @property
        def worker_node_entry_point(self):
            return "jobfleet-worker-node"

        def start(self): pass
        def stop(self): pass
        def get_queueing_errors(self, distributor_ids): return {}
        def get_submitted_or_running(self, distributor_ids): return set()
        def terminate_task_instances(self, distributor_ids): pass
        def submit_to_batch_distributor(self, command, name, requested_resources): return "1"
        def get_remote_exit_info(self, distributor_id): return RemoteExitInfo.unknown("never")

    class WorkerNode(ClusterWorkerNode):
        def __init__(self): pass
        distributor_id = None
        array_step_id = None
        def get_usage_stats(self): return {}
        def get_exit_info(self, exit_code, error_msg): return ("D", "")
"""
