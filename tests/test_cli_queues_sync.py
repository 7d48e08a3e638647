"""`jobfleet queues sync`: a backend's own queues (its get_cluster_queues hook) into the ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .test_cli import jobfleet

QUEUES_HOOK = """

    def get_cluster_queue_class(): return Queue
    def get_cluster_distributor_class(): return Distributor
    def get_cluster_worker_node_class(): return WorkerNode

    def get_cluster_queues(settings):
        return {
            "short": {"max_cores": 4, "max_memory": "16384M", "max_runtime": 3600},
            "long": {"max_runtime": "7-00:00:00", "max_gpus": 2, "partition": "long"},
        }
"""


def test_sync_adds_then_updates_the_backends_queues(
    install_plugin: Callable[..., Path], good_plugin: str, tmp_path: Path
) -> None:
    site = install_plugin(
        "jobfleet-withqueues", {"withqueues": good_plugin + QUEUES_HOOK}, {"withq": "withqueues"}
    )
    ledger = str(tmp_path / "ledger.db")
    first = jobfleet("queues", "sync", "--cluster", "withq", "--ledger", ledger, extra_path=site)
    assert first.returncode == 0, first.stderr
    assert "withq/short: added: max_cores=4, max_memory=16G, max_runtime=1h" in first.stdout
    listing = jobfleet("queues", "list", "--json", "--ledger", ledger, extra_path=site)
    queues = {q["queue"]: q["parameters"] for q in json.loads(listing.stdout)}
    assert queues["short"] == {"max_cores": 4, "max_memory": "16G", "max_runtime": 3600}
    assert queues["long"] == {"max_runtime": 604800, "max_gpus": 2, "partition": "long"}
    again = jobfleet("queues", "sync", "--cluster", "withq", "--ledger", ledger, extra_path=site)
    assert "withq/short: updated" in again.stdout


def test_a_backend_without_the_hook_says_how_to_add_queues(tmp_path: Path) -> None:
    result = jobfleet("queues", "sync", "--cluster", "dummy", "--ledger", str(tmp_path / "l.db"))
    assert result.returncode == 1
    assert "cannot read its queues" in result.stderr
    assert "jobfleet queues add" in result.stderr
