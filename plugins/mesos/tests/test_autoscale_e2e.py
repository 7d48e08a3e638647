"""jobfleet's own cluster scaler end to end on the Mesos emulator (issue 15, item 5).

`jobfleet run --cluster mesos --autoscale --provisioner localagents …` runs in this process
(the emulator does too): the provisioner's nodes are emulator agents (`agent_provisioner.py`),
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
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.plugins import PluginRegistry
from jobfleet.core.scaling import Shape, parse_node_types
from jobfleet.core.scaling.scaler import ClusterScaler, ScalerConfig
from jobfleet.core.testing.host import wait_for

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


local = _load("agent_provisioner")


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


# -- the scale-down race, step by step ------------------------------------------------------


class HookedDistributor:
    """The run's real Mesos distributor as the scaler sees it, with a hook where the scaler
    calls `ignore_node`: it has just judged the node idle and starts draining it."""

    def __init__(self, distributor: Any) -> None:
        self.distributor = distributor
        self.before_ignore: list[Any] = []

    def get_nodes(self, *args: Any, **kwargs: Any) -> Any:
        return self.distributor.get_nodes(*args, **kwargs)

    def node_in_use(self, node: str) -> bool:
        return bool(self.distributor.node_in_use(node))

    def ignore_node(self, node: str) -> None:
        for hook in self.before_ignore:
            hook(node)
        self.distributor.ignore_node(node)

    def unignore_node(self, node: str) -> None:
        self.distributor.unignore_node(node)


class Race:
    """One agent launched and joined through the scaler (max one c2 node, no smoothing), the
    real Mesos distributor over the kit's http channel, and what the scaler recorded."""

    TASK = Shape(1800.0, 100 * 2**20, 1.0, 0, False)

    def __init__(self, mc: Any, kit: Any) -> None:
        from jobfleet.plugins.mesos.distributor import MesosDistributor

        helpers = _load("mesos_helpers")
        self.mc, self.kit = mc, kit
        self.distributor = MesosDistributor(
            "race", settings=helpers.settings_for(mc), **kit.distributor_kwargs()
        )
        self.hooked = HookedDistributor(self.distributor)
        self.provisioner = local.bound_provisioner_class(mc)("race")  # hooks of its own
        self.events: list[Any] = []
        config = ScalerConfig(tuple(parse_node_types("c2")), max_nodes={"c2": 1}, beta=0.0)
        self.provisioner.node_types = list(config.node_types)
        self.scaler = ClusterScaler(
            self.provisioner, self.hooked, config, clock=time.monotonic, record=self.events.append
        )

    def actions(self) -> list[str]:
        return [e.details["action"] for e in self.events]

    def submit(self, command: str) -> Any:
        return self.kit.submit(self.distributor, command, resources={"cores": 1, "memory": "64M"})

    def done(self, submission: Any) -> Any:
        info = self.distributor.get_remote_exit_info(submission.distributor_id)
        return info if info.finalized else None

    def joined_node(self) -> str:
        """Launch the node for one waiting task, run a task on it, see it joined."""
        self.scaler.step([self.TASK])
        [node] = self.provisioner.get_provisioned_workers()
        first = self.submit("true")
        wait_for(lambda: self.done(first), "a first task on the new agent", 60)
        wait_for(lambda: node.name in self.distributor.get_nodes(), "the agent in get_nodes", 30)
        [view] = self.scaler.step([self.TASK])
        assert view.state == "joined", view
        return str(node.name)

    def agent_tasks(self, submission: Any) -> list[tuple[str, str]]:
        hostnames = {k: v["hostname"] for k, v in self.mc.agents().items()}
        return [
            (t["state"], hostnames[t["agent_id"]])
            for t in self.mc.tasks()
            if t["task_id"] == submission.distributor_id
        ]


@pytest.fixture
def race(empty_cluster: Any, tmp_path: Path) -> Iterator[Race]:
    from jobfleet.core.testing import KitHost

    kit = KitHost(tmp_path / "kit", "http", state_dir=True)
    try:
        made = Race(empty_cluster, kit)
        made.distributor.start()
        try:
            yield made
        finally:
            made.distributor.stop()
            made.provisioner.hooks.before_terminate.clear()
            made.provisioner.destroy_cluster()
    finally:
        kit.close()


@pytest.mark.slow
def test_a_task_placed_on_a_node_the_scaler_judged_idle_keeps_it_until_done(
    race: Race, tmp_path: Path
) -> None:
    """The scaler picks an idle node to remove; before its `ignore_node`, the distributor
    places a task there. The drain sees the node in use and waits: the task finishes once, on
    that node, and only then is the node terminated."""
    out = tmp_path / "ran.txt"
    node = race.joined_node()
    placed: list[Any] = []

    def place_work_first(name: str) -> None:
        assert name == node
        assert not race.distributor.node_in_use(name)  # what the scaler just judged
        placed.append(race.submit(f"sleep 2; echo raced >> {out}"))
        wait_for(lambda: race.distributor.node_in_use(name), "the task placed on the node", 30)

    race.hooked.before_ignore.append(place_work_first)
    states_at_removal: list[Any] = []
    race.provisioner.hooks.before_terminate.append(
        lambda p, nodes: states_at_removal.append(race.agent_tasks(placed[0]))
    )
    race.scaler.step([])  # nothing waits or runs, in the scaler's eyes: drain the node
    assert race.actions()[-1] == "drain", race.actions()
    assert "scale_down" not in race.actions()  # in use after all: not terminated
    assert race.provisioner.get_provisioned_workers()[0].name == node
    wait_for(lambda: race.scaler.step([]) == [] or None, "the node terminated once drained", 30)
    [task] = placed
    info = race.done(task)
    assert info is not None
    assert info.error_state is ErrorState.DONE, info
    assert out.read_text().split() == ["raced"]
    assert race.agent_tasks(task) == [("TASK_FINISHED", node)]
    assert states_at_removal == [[("TASK_FINISHED", node)]]  # over before the node went
    assert race.actions()[-1] == "scale_down"
    assert [len(r) for r in race.kit.final_reports().values()] == [1, 1]  # no repeat


@pytest.mark.slow
def test_work_submitted_while_the_scaler_terminates_a_drained_node_is_not_placed_there(
    race: Race, tmp_path: Path
) -> None:
    """The scaler has ignored the node and found it idle; as it terminates it, a task is
    submitted and the node's offer comes back. The ignored node is declined, so the task waits,
    is not lost with the node, and runs once on the node launched for it."""
    mc = race.mc
    out = tmp_path / "ran.txt"
    node = race.joined_node()
    submitted: list[Any] = []

    def submit_work_first(provisioner: Any, nodes: Any) -> None:
        assert [n.name for n in nodes] == [node]
        declined = mc.offers_declined
        submitted.append(race.submit(f"echo raced >> {out}"))
        # The revived offer of the only agent, the one going away: declined (ignored node).
        wait_for(lambda: mc.offers_declined > declined or None, "the offer declined", 30)
        assert not race.distributor.node_in_use(node)

    race.provisioner.hooks.before_terminate.append(submit_work_first)
    race.scaler.step([])
    assert race.actions()[-2:] == ["drain", "scale_down"], race.actions()
    assert not any(a["active"] for a in mc.agents().values())
    [task] = submitted
    assert race.done(task) is None  # waiting, not lost
    assert race.agent_tasks(task) == []
    race.scaler.step([race.TASK])  # the work is seen waiting: a new node
    [new] = race.provisioner.get_provisioned_workers()
    assert new.name != node
    info = wait_for(lambda: race.done(task), "the task's end on the new node", 60)
    assert info.error_state is ErrorState.DONE, info
    assert out.read_text().split() == ["raced"]
    assert race.agent_tasks(task) == [("TASK_FINISHED", new.name)]
