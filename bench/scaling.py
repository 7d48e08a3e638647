"""The cluster scaler on a simulated cluster, in virtual time: cost and speed against bounds.

    uv run python bench/scaling.py [--tasks 2400] [--seed 15] [--max-nodes 40]

A seeded trace of tasks (mixed cores, memory and durations, most arriving in bursts) goes
through the real `ClusterScaler` and `FakeProvisioner`, with a simulated backend that places
each task on the fullest node it fits (a `ScalableDistributor`: nodes join `--boot` seconds after
launch, ignored nodes get nothing new). The same trace then runs on a static cluster of
`--max-nodes` nodes from the start. Printed, as ratios measured in the one run:

- node-hours of the autoscaled cluster against the lower bound: the trace's core-seconds
  divided by a node's cores (a cluster that is always exactly full, with no boot time);
- the autoscaled makespan against the static cluster's.

Targets (issue 15): node-hours at most 1.3 x the lower bound, makespan at most 1.15 x the
static cluster's. Nothing runs for real, so the figures do not depend on the machine.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from dataclasses import dataclass, field

from jobfleet.core.cluster_protocol import NodeInfo
from jobfleet.core.resources import GIB
from jobfleet.core.scaling import NodeType, Shape
from jobfleet.core.scaling.scaler import ClusterScaler, ScalerConfig, ScalingEvent
from jobfleet.core.testing.fake_provisioner import FakeProvisioner

NODE_TYPE = "medium"  # 4 cores, 16G in FAKE_NODE_SHAPES


@dataclass(frozen=True)
class Task:
    arrival: float
    duration: float
    requested: float
    cores: int
    memory: int

    @property
    def shape(self) -> Shape:
        return Shape(self.requested, self.memory, self.cores, 0, False)


def make_trace(count: int, seed: int) -> list[Task]:
    """Bursts of short and long tasks over about six hours, plus a steady trickle."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible trace, not a secret
    tasks: list[Task] = []
    bursts = [rng.uniform(0, 6 * 3600) for _ in range(6)]
    for index in range(count):
        if index % 5 == 0:
            arrival = rng.uniform(0, 6.5 * 3600)  # the trickle
        else:
            arrival = rng.choice(bursts) + rng.expovariate(1 / 120)
        kind = rng.random()
        if kind < 0.6:
            duration = rng.uniform(30, 600)  # short
        elif kind < 0.9:
            duration = rng.uniform(600, 1800)
        else:
            duration = rng.uniform(1800, 3600)  # long
        cores = rng.choice((1, 1, 1, 2, 2, 4))
        memory = rng.choice((1, 2, 3)) * cores * GIB
        requested = duration * rng.uniform(1.0, 1.5)  # users ask for more than they use
        tasks.append(Task(arrival, duration, requested, cores, memory))
    tasks.sort(key=lambda t: t.arrival)
    return tasks


@dataclass
class SimNode:
    cores: float
    memory: int
    used_cores: float = 0.0
    used_memory: int = 0
    running: int = 0


@dataclass
class SimCluster:
    """The backend: places waiting tasks on joined nodes, runs them for their duration."""

    provisioner: FakeProvisioner | None
    boot: float
    static: dict[str, SimNode] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)
    nodes: dict[str, SimNode] = field(default_factory=dict)
    waiting: list[Task] = field(default_factory=list)
    running: list[tuple[float, int, Task, str]] = field(default_factory=list)
    now: float = 0.0
    last_end: float = 0.0
    _seq: int = 0

    def refresh(self) -> None:
        if self.provisioner is None:
            self.nodes = self.static
            return
        live = self.provisioner.live
        for name in list(self.nodes):
            if name not in live:
                node = self.nodes.pop(name)
                assert node.running == 0, "a busy node was terminated"
        for name, node in live.items():
            if (
                name not in self.nodes
                and self.now - self.provisioner.launched_at[name] >= self.boot
            ):
                cores, memory = self.provisioner.shapes[node.node_type]
                self.nodes[name] = SimNode(cores, memory)

    def advance(self, until: float) -> None:
        while self.running and self.running[0][0] <= until:
            end, _, task, name = heapq.heappop(self.running)
            node = self.nodes[name]
            node.used_cores -= task.cores
            node.used_memory -= task.memory
            node.running -= 1
            self.last_end = max(self.last_end, end)
        self.now = until

    def schedule(self) -> None:
        self.refresh()
        usable = [(n, node) for n, node in self.nodes.items() if n not in self.ignored]
        still = []
        for task in self.waiting:
            best = None
            for name, node in usable:
                free = node.cores - node.used_cores
                fits = free >= task.cores and node.memory - node.used_memory >= task.memory
                if fits and (best is None or free < best[0]):
                    best = (free, name, node)
            if best is None:
                still.append(task)
                continue
            _, name, node = best
            node.used_cores += task.cores
            node.used_memory += task.memory
            node.running += 1
            self._seq += 1
            heapq.heappush(self.running, (self.now + task.duration, self._seq, task, name))
        self.waiting = still

    # -- ScalableDistributor ----------------------------------------------------------------

    def get_nodes(self) -> dict[str, NodeInfo]:
        self.refresh()
        return {
            name: NodeInfo(node.used_cores, node.used_memory, node.cores, node.memory)
            for name, node in self.nodes.items()
        }

    def node_in_use(self, node: str) -> bool:
        found = self.nodes.get(node)
        return found is not None and found.running > 0

    def ignore_node(self, node: str) -> None:
        self.ignored.add(node)

    def unignore_node(self, node: str) -> None:
        self.ignored.discard(node)


def simulate(
    tasks: list[Task], *, autoscale: bool, args: argparse.Namespace
) -> tuple[float, float, int]:
    """(makespan, node-seconds, scaler events)."""
    clock = [0.0]
    provisioner = FakeProvisioner("bench", clock=lambda: clock[0]) if autoscale else None
    cluster = SimCluster(provisioner, args.boot)
    if provisioner is None:
        cores, memory = 4, 16 * GIB
        cluster.static = {f"static-{i}": SimNode(cores, memory) for i in range(args.max_nodes)}
    events: list[ScalingEvent] = []
    scaler = None
    if provisioner is not None:
        config = ScalerConfig(
            (NodeType(NODE_TYPE),),
            max_nodes={NODE_TYPE: args.max_nodes},
            beta=args.beta,
            horizon=args.horizon,
            join_timeout=args.boot * 5,
        )
        scaler = ClusterScaler(
            provisioner, cluster, config, clock=lambda: clock[0], record=events.append
        )
    pending = list(reversed(tasks))
    step = args.step
    next_scale = 0.0
    while pending or cluster.waiting or cluster.running:
        now = clock[0]
        cluster.advance(now)
        while pending and pending[-1].arrival <= now:
            cluster.waiting.append(pending.pop())
        cluster.schedule()
        if scaler is not None and now >= next_scale:
            scaler.step(
                [t.shape for t in cluster.waiting],
                [
                    Shape(max(end - now, 1.0), t.memory, t.cores, 0, False)
                    for end, _, t, _ in cluster.running
                ],
            )
            next_scale = now + args.interval
            cluster.schedule()
        clock[0] = now + step
    node_seconds = float(args.max_nodes) * cluster.last_end
    if provisioner is not None:
        provisioner.destroy_cluster()
        node_seconds = provisioner.node_seconds
    return cluster.last_end, node_seconds, len(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--max-nodes", type=int, default=40)
    parser.add_argument("--boot", type=float, default=120.0, help="seconds a node takes to join")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between steps")
    parser.add_argument("--step", type=float, default=10.0, help="simulation tick (seconds)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--horizon", type=float, default=1800.0)
    args = parser.parse_args(argv)

    tasks = make_trace(args.tasks, args.seed)
    core_seconds = sum(t.cores * t.duration for t in tasks)
    lower_bound = core_seconds / 4 / 3600
    started = time.perf_counter()
    static_makespan, _, _ = simulate(tasks, autoscale=False, args=args)
    auto_makespan, node_seconds, events = simulate(tasks, autoscale=True, args=args)
    elapsed = time.perf_counter() - started
    node_hours = node_seconds / 3600
    cost = node_hours / lower_bound
    speed = auto_makespan / static_makespan
    print(f"trace: {len(tasks)} tasks, seed {args.seed}, {core_seconds / 3600:.0f} core-hours")
    print(
        f"static cluster ({args.max_nodes} nodes): makespan {static_makespan / 3600:.2f} h, "
        f"{args.max_nodes * static_makespan / 3600:.0f} node-hours"
    )
    print(
        f"autoscaled (max {args.max_nodes}, beta {args.beta}, horizon {args.horizon:g} s): "
        f"makespan {auto_makespan / 3600:.2f} h, {node_hours:.1f} node-hours, {events} events"
    )
    print(f"node-hours / lower bound ({lower_bound:.1f}): {cost:.3f}  (target <= 1.3)")
    print(f"makespan / static makespan: {speed:.3f}  (target <= 1.15)")
    print(f"simulated in {elapsed:.1f} s")
    return 0 if cost <= 1.3 and speed <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
