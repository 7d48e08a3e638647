"""jobfleet's own cluster scaler end to end on the Mesos emulator (issue 15, item 5).

`jobfleet run --cluster mesos --autoscale --provisioner localagents …` runs in this process
(the emulator does too): the provisioner's nodes are emulator agents (`local_provisioner.py`),
registered as a plugin of an in-process `PluginRegistry` beside the installed Mesos plugin. The
master starts with no agent at all: tasks wait, the scaler adds agents, the tasks run on them
once each, the scaler drains the surplus and removes it, and the ledger's `scaling` events say
so. The scale-down race (work arriving while the scaler drains a node it believes idle) is
driven step by step through the scaler with the real Mesos distributor, so that it happens at
exactly the point under test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobfleet.core import plugins as plugins_module
from jobfleet.core.plugins import PluginRegistry

EXECUTOR = f"{sys.executable} -m jobfleet.plugins.mesos.executor"
WORKER = str(Path(sys.executable).with_name("jobfleet-worker-node"))


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local = _load("local_provisioner")


class _EntryPoint:
    """An entry point of the `jobfleet.plugins` group for a module made in this process."""

    def __init__(self, name: str, module: Any) -> None:
        self.name, self.value, self._module = name, module.__name__, module

    def load(self) -> Any:
        return self._module


@pytest.fixture
def empty_cluster(tmp_path: Path) -> Iterator[Any]:
    """A Mesos master without a single agent."""
    from mesos_emulator import MesosCluster

    mc = MesosCluster(tmp_path, agents=0)
    try:
        yield mc
    finally:
        mc.stop()
    assert not mc.internal_errors, "\n".join(mc.internal_errors)


@pytest.fixture
def host_env(empty_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The installed Mesos plugin and the local provisioner `localagents`, as the process-wide
    registry, and the environment `jobfleet run --cluster mesos` needs; the provisioner class
    (its hooks and instances) is returned."""
    for key in [k for k in os.environ if k.startswith("JOBFLEET_")]:
        monkeypatch.delenv(key)
    for key, value in {
        "JOBFLEET_MESOS_MASTER": empty_cluster.master,
        "JOBFLEET_MESOS_EXECUTOR_COMMAND": EXECUTOR,
        "JOBFLEET_MESOS_WORKER_COMMAND": WORKER,
        "JOBFLEET_MESOS_KILL_GRACE": "2",
        "JOBFLEET_MESOS_REFUSE_SECONDS": "1",
        "JOBFLEET_MESOS_FAILOVER_TIMEOUT": "300",
        "JOBFLEET_MESOS_NODE_REPORT_INTERVAL": "1",
        "JOBFLEET_LEDGER": str(tmp_path / "ledger.db"),
    }.items():
        monkeypatch.setenv(key, value)
    provisioner_class = local.bound_provisioner_class(empty_cluster)
    [mesos] = entry_points(group="jobfleet.plugins", name="mesos")
    registry = PluginRegistry(
        [mesos, _EntryPoint("localagents", local.provisioner_plugin_module(provisioner_class))],
        environ={},
    )
    monkeypatch.setattr(plugins_module, "_default", registry)
    monkeypatch.chdir(tmp_path)
    return provisioner_class


def jobfleet(*args: str) -> Any:
    from jobfleet.core.cli.app import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def scaling_events(run_id: int) -> list[dict[str, Any]]:
    shown = jobfleet("events", str(run_id), "--json")
    assert shown.exit_code == 0, shown.output
    events = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    return [e for e in events if e["kind"] == "scaling"]


@pytest.mark.slow
def test_the_scaler_adds_agents_for_waiting_tasks_then_drains_and_removes_them(
    empty_cluster: Any, host_env: Any, tmp_path: Path
) -> None:
    mc = empty_cluster
    out = tmp_path / "ran.txt"
    # 12 one-core tasks, each taken by the scaler to hold its core for the whole horizon
    # (runtime 30m; they take 2 s): 12 cores, three 4-core agents. One takes 12 s, so the
    # scaler drains the other two agents while the run goes on.
    tasks = {
        "defaults": {"resources": {"cores": 1, "memory": "100M", "runtime": "30m"}},
        "tasks": [
            {"name": f"t{n}", "command": f"sleep {12 if n == 0 else 2}; echo t{n} >> {out}"}
            for n in range(12)
        ],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    # Which nodes were terminated before the long task was done (its line written).
    early: list[str] = []

    def note(provisioner: Any, nodes: Any) -> None:
        if "t0" not in (out.read_text().split() if out.exists() else []):
            early.extend(node.name for node in nodes)

    host_env.hooks.before_terminate.append(note)
    started = time.monotonic()
    result = jobfleet(
        "run",
        "--cluster",
        "mesos",
        "--autoscale",
        "--provisioner",
        "localagents",
        "--node-types",
        "c4",
        "--max-nodes",
        "3",
        "--scale-interval",
        "1",
        "tasks.json",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "done", summary
    assert {(t["task_state"], t["attempts"]) for t in summary["tasks"]} == {("done", 1)}
    # Every task ran exactly once.
    lines = sorted(out.read_text().split())
    assert lines == sorted(f"t{n}" for n in range(12)), lines
    # On the scaler's agents only (there was no other), none lost with its agent.
    [provisioner] = host_env.instances
    assert provisioner.cluster_name == "mesos-run-1"
    hostnames = {a["id"]: a["hostname"] for a in ({"id": k, **v} for k, v in mc.agents().items())}
    assert len(hostnames) == 3
    assert all(name.startswith("mesos-run-1-c4-") for name in hostnames.values())
    states = [(t["state"], hostnames[t["agent_id"]]) for t in mc.tasks()]
    assert len(states) == 12
    assert {state for state, _ in states} == {"TASK_FINISHED"}
    assert len({host for _, host in states}) == 3  # every agent did some of the work
    assert not any(a["active"] for a in mc.agents().values())  # all removed in the end
    # What the ledger says: three agents for the twelve waiting tasks; two drained (nothing
    # runs there once the short tasks are done) and terminated while the long task ran; the
    # last drained too once it was done, or released with the run, whichever came first.
    events = scaling_events(1)
    actions = [e["details"]["action"] for e in events]
    assert events[0]["message"] == "3 × c4 (on-demand) for 12 waiting tasks", events[0]
    assert events[0]["details"]["nodes"] == sorted(hostnames.values())
    drains = [e for e in events if e["details"]["action"] == "drain"]
    assert drains[0]["message"].startswith("Draining ")
    drained = [n for e in drains for n in e["details"]["nodes"]]
    assert set(early) & set(drained), (early, actions)  # while the long task still ran
    removed = [e for e in events if e["details"]["action"] == "scale_down"]
    assert sorted(n for e in removed for n in e["details"]["nodes"]) == sorted(drained)
    assert all("drained, nothing of ours runs on them" in e["message"] for e in removed)

    def first(action: str, node: str) -> int:
        return next(
            i
            for i, e in enumerate(events)
            if e["details"]["action"] == action and node in e["details"]["nodes"]
        )

    for node in drained:  # terminated only after it was drained
        assert first("drain", node) < first("scale_down", node)
    released = [
        n for e in events if e["details"]["action"] == "release" for n in e["details"]["nodes"]
    ]
    assert sorted(drained + released) == sorted(hostnames.values()), actions
    assert set(actions) <= {"scale_up", "drain", "scale_down", "release"}, actions
    assert actions.count("scale_up") == 1
    assert time.monotonic() - started < 60
