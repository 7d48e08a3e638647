"""A strict loopback Mesos master and agents speaking the v1 scheduler and executor HTTP APIs
(JSON, RecordIO event streams), for tests. Test infrastructure only (never imported by product
code). Usage:

    mc = MesosCluster(tmp_path, agents=2)     # master + agent-1, agent-2, serving
    driver = MesosSchedulerDriver(sched, framework_info, mc.master, use_addict=True)
    ...
    mc.stop()                                 # kills every executor, stops serving

Cluster-side actions (the framework asks for none of them): `mc.remove_agent(id or hostname)`,
`mc.disconnect_schedulers()`, `mc.kill_task(task_id)` (an operator's kill),
`mc.shutdown_executor(agent, framework_id, executor_id)` (an agent's SHUTDOWN),
`mc.require_auth(principal, secret)`.

Modules: `http` (servers, request log, RecordIO streams), `master` (scheduler API, offers,
validation, reconciliation, failover), `agent` (executor API, processes, status update retry),
`state` (frameworks, tasks, offers), `resources` (scalars and attributes).

One control-loop thread runs the master's timers and allocator and each agent's timers, woken
by every call and at least every `tick_interval` seconds. One lock guards all state.

As the real master and agent (what a backend must cope with):
- Required proto fields missing (TaskInfo `name`/`task_id`/`agent_id`, ExecutorInfo
  `executor_id`, Resource `name`/`type`, FrameworkInfo `user`/`name`) fail the whole call with
  400; in pymesos that raises in its event thread. Semantic errors give TASK_ERROR per task.
- Invalid offers in an ACCEPT: TASK_DROPPED for PARTITION_AWARE frameworks, TASK_LOST otherwise
  (reason REASON_INVALID_OFFERS).
- Master-generated updates (TASK_ERROR, TASK_LOST/GONE on agent loss, KILL of an unknown task,
  reconciliation) carry no uuid and no `data`; agent/executor ones carry a uuid and are retried
  every `update_retry_interval` until acknowledged, one at a time per task.
- A task whose terminal update was acknowledged is forgotten: reconciling it answers TASK_LOST
  (TASK_GONE when PARTITION_AWARE and its agent is known). Reconcile only live tasks.
- shell=false commands exec `value` with argv = `arguments` (arguments[0] is argv[0]).
- Executors inherit the test process's environment (minus MESOS_*), get the MESOS_* variables a
  real agent sets, but MESOS_CHECKPOINT only when FrameworkInfo.checkpoint is true (the real
  agent sets "0", which pymesos reads as true) and never MESOS_LOCAL: pymesos' executor kills
  its process group when its stream drops or on SHUTDOWN.
- Every executor exit is reported with FAILURE (executor_id, agent_id, wait status), except for
  command executors (tasks with `command`) and after the framework was removed.

Simplified: JSON only (no protobuf); scalar resources only (cpus, mem, disk, gpus); no
reservations, ports, task groups, health checks or containerizers; one allocation of each
agent's free resources at a time (no DRF); an ACCEPT without filters sets none (the real master
applies the default 5 s to the remainder); idle executors are shut down after
`executor_idle_timeout` (None: never, as Mesos); the user is not switched.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import resources as rs
from .agent import Agent, kill_container
from .master import VERSION, Master

__all__ = ["VERSION", "MesosCluster"]

T = TypeVar("T")


class MesosCluster:
    def __init__(self, tmp_path: Path | str, agents: int = 2) -> None:
        self.root = Path(tmp_path) / "mesos-emulator"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.stopping = False
        self.internal_errors: list[str] = []
        # Settings (seconds); change them at any time.
        self.heartbeat_interval = 15.0
        self.update_retry_interval = 10.0
        self.executor_shutdown_grace_period = 2.0
        self.executor_registration_timeout = 60.0
        self.executor_idle_timeout: float | None = 10.0
        self.offer_timeout: float | None = None
        self.tick_interval = 0.05
        # Counters.
        self.calls: collections.Counter[str] = collections.Counter()
        self.executor_calls: collections.Counter[str] = collections.Counter()
        self.offers_sent = 0
        self.offers_declined = 0
        self.offers_rescinded = 0
        self.updates_forwarded = 0
        self.updates_retried = 0
        self.acknowledged = 0
        self.dropped_updates: list[dict[str, Any]] = []
        self._auth: tuple[str, str] | None = None
        self._request_log: list[str] = []
        self._agents: dict[str, Agent] = {}
        self._next_agent = 1
        self._wake = threading.Event()
        self._master = Master(self)
        self.master = self._master.server.address
        self.master_url = f"http://{self.master}"
        for _ in range(agents):
            self.add_agent()
        self._loop = threading.Thread(target=self._run, name="mesos-emulator-loop", daemon=True)
        self._loop.start()

    # -- agents --------------------------------------------------------------------------------
    def add_agent(
        self,
        *,
        cpus: float = 2.0,
        mem: float = 4096,
        disk: float = 10000,
        gpus: float = 0,
        attributes: dict[str, str | float] | None = None,
        hostname: str | None = None,
    ) -> str:
        with self.lock:
            agent_id = f"{self._master.id}-S{self._next_agent}"
            name = hostname or f"agent-{self._next_agent}"
            self._next_agent += 1
            total = {
                "cpus": rs.fixed(cpus),
                "mem": rs.fixed(mem),
                "disk": rs.fixed(disk),
                "gpus": rs.fixed(gpus),
            }
            self._agents[agent_id] = Agent(self, agent_id, name, total, dict(attributes or {}))
            self.wake()
        return agent_id

    def remove_agent(self, agent_id: str, *, unreachable: bool = False) -> None:
        """The agent (id or hostname) is lost: executors killed, FAILURE {agent_id} to every
        framework, a TASK_LOST (TASK_GONE, or TASK_UNREACHABLE with unreachable=True, for
        PARTITION_AWARE frameworks) for each unfinished task, its offers rescinded."""
        with self.lock:
            agent = self._agent(agent_id)
            if not agent.active:
                return
            agent.remove()
            self._master.agent_removed(agent, unreachable)
        agent.server.stop()

    def _agent(self, agent_id_or_hostname: str) -> Agent:
        agent = self._agents.get(agent_id_or_hostname)
        if agent is None:
            for a in self._agents.values():
                if a.hostname == agent_id_or_hostname:
                    return a
            raise KeyError(f"no agent {agent_id_or_hostname!r}")
        return agent

    def agent_id(self, hostname: str) -> str:
        """The id of the agent with this hostname (`agent-1`, …)."""
        return self._agent(hostname).id

    def agents(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {
                a.id: {
                    "hostname": a.hostname,
                    "address": a.address,
                    "total": dict(a.total),
                    "used": a.used() if a.active else rs.empty(),
                    "offered": self._master.offered(a.id),
                    "attributes": dict(a.attributes),
                    "active": a.active,
                    "executors": sorted(f"{f}/{e}" for f, e in a.executors),
                }
                for a in self._agents.values()
            }

    # -- reading state -------------------------------------------------------------------------
    def frameworks(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {fid: fw.as_dict() for fid, fw in self._master.frameworks.items()}

    def tasks(self, framework_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            m = self._master
            for fw in [*m.frameworks.values(), *m.removed_frameworks.values()]:
                if framework_id is not None and fw.id != framework_id:
                    continue
                for t in [*fw.completed, *fw.tasks.values()]:
                    out.append(t.as_dict())
            return out

    def offers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "id": o.id,
                    "framework_id": o.framework_id,
                    "agent_id": o.agent_id,
                    "resources": dict(o.resources),
                }
                for o in self._master.offers.values()
            ]

    def call_count(self, type: str | None = None) -> int:
        with self.lock:
            if type is None:
                return sum(self.calls.values())
            return self.calls[type]

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.executor_calls.clear()
            self.offers_sent = self.offers_declined = self.offers_rescinded = 0
            self.updates_forwarded = self.updates_retried = self.acknowledged = 0

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30) -> T:
        """Re-evaluate predicate every 20 ms until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                errors = "\n".join(self.internal_errors[-3:])
                raise TimeoutError(
                    f"condition not met within {timeout} s"
                    + (f"; emulator errors:\n{errors}" if errors else "")
                )
            time.sleep(0.02)

    # -- cluster-side actions ------------------------------------------------------------------
    def disconnect_schedulers(self) -> None:
        """Cut every scheduler's subscription stream; each framework stays, disconnected, for
        its failover_timeout."""
        with self.lock:
            for fw in self._master.frameworks.values():
                if fw.stream is not None:
                    fw.stream.cut_now()

    def kill_task(self, task_id: str) -> None:
        """Kill a live task from the cluster's side, as an operator (an agent drain, a
        maintenance) does: KILL to its executor (SIGTERM to a command task), which the framework
        never asked for. Its terminal update is whatever the executor sends."""
        with self.lock:
            for fw in self._master.frameworks.values():
                task = fw.tasks.get(task_id)
                if task is not None and not task.terminal:
                    agent = self._agents[task.agent_id]
                    if agent.active:
                        agent.kill_task(task)
                    return
            raise KeyError(f"no live task {task_id!r}")

    def shutdown_executor(self, agent_id: str, framework_id: str, executor_id: str) -> None:
        """SHUTDOWN to an executor (agent id or hostname) that the framework did not ask for,
        as an agent does when it drains or restarts; its container is killed after
        `executor_shutdown_grace_period`."""
        with self.lock:
            agent = self._agent(agent_id)
            if (framework_id, executor_id) not in agent.executors:
                raise KeyError(f"no executor {executor_id!r} of {framework_id!r} on {agent_id!r}")
            agent.shutdown_executor(framework_id, executor_id)
            self.wake()

    def require_auth(self, principal: str, secret: str) -> None:
        with self.lock:
            self._auth = (principal, secret)

    def all_text(self) -> str:
        """Every request (minus Authorization headers), every FrameworkInfo, every executor's
        stdout and stderr."""
        with self.lock:
            parts = list(self._request_log)
            m = self._master
            for fw in [*m.frameworks.values(), *m.removed_frameworks.values()]:
                parts.append(json.dumps(fw.info, sort_keys=True))
            agents = list(self._agents.values())
        for agent in agents:
            for path in sorted(agent.root.rglob("std*")):
                with contextlib.suppress(OSError):
                    parts.append(f"--- {path}\n" + path.read_text(errors="replace"))
        return "\n".join(parts)

    def _log_request(self, who: str, method: str, path: str, headers: Any, body: bytes) -> None:
        lines = [f"[{who}] {method} {path}"]
        for k, v in headers.items():
            if k.lower() != "authorization":
                lines.append(f"{k}: {v}")
        if body:
            lines.append(body.decode(errors="replace"))
        with self.lock:
            self._request_log.append("\n".join(lines))

    # -- the control loop ----------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping:
            self._wake.wait(self.tick_interval)
            if self.stopping:
                break
            self._wake.clear()
            try:
                with self.lock:
                    now = time.monotonic()
                    for agent in list(self._agents.values()):
                        agent.tick(now)
                    self._master.tick(now)
            except Exception:
                self.internal_errors.append(traceback.format_exc())
                time.sleep(0.1)

    def stop(self) -> None:
        """Kill every executor's container and stop serving. No process is left behind."""
        if self.stopping:
            return
        with self.lock:
            self.stopping = True
            agents = list(self._agents.values())
            executors = []
            for agent in agents:
                executors.extend(agent.executors.values())
                agent.stop()
            for fw in self._master.frameworks.values():
                if fw.stream is not None:
                    fw.stream.finish()
        self._wake.set()
        self._loop.join(timeout=10)
        for ex in executors:
            if ex.proc is not None:
                with contextlib.suppress(Exception):
                    ex.proc.wait(timeout=10)
            kill_container(ex.container_id, None)
        for agent in agents:
            with contextlib.suppress(Exception):
                agent.server.stop()
        with contextlib.suppress(Exception):
            self._master.server.stop()

    def __enter__(self) -> MesosCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict[str, Any]:
        """Everything, for debugging a failing test."""
        return copy.deepcopy(
            {"frameworks": self.frameworks(), "tasks": self.tasks(), "agents": self.agents()}
        )
