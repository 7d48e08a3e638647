"""The Mesos distributor: a framework whose scheduler runs in a thread of the host.

- Submissions queue task instances (an array: one call, its steps queued together); offers are
  packed with them by shape, largest first, never beyond what an offer holds; offers left unused
  are declined with `refuse_seconds`. `SUPPRESS` when nothing waits, `REVIVE` on new work.
- Each task runs through jobfleet's executor (one per agent), which starts the wrapper.
- Status rounds are answered from the state the scheduler's callbacks keep: no call per task.
- Status updates are acknowledged only after their outcome is recorded (in memory and, with a
  `state_dir`, in the journal: see state.py), so a host crash never loses one: the master sends
  it again.
- `jobfleet run --resume` re-subscribes with the journal's framework id (within the failover
  timeout) and RECONCILEs every task it believes live; tasks that never launched are queued
  again. Master disconnects are retried with backoff (and the next master of the list).

Ids: `jf-RUN-RANDOM` for a task, `jf-RUN-RANDOM_STEP` for an array's step (RUN: the run's id,
kept in the journal).
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import math
import os
import re
import secrets
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.cluster_protocol import NodeInfo
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.resources import MIB, ResourceRequest, parse_memory
from jobfleet.core.wrapper import (
    ENTRY_POINT_VARIABLE,
    entry_point_argv,
    without_host_variables,
)
from jobfleet.plugins.mesos import _pymesos, exits
from jobfleet.plugins.mesos.executor import REPORT_INTERVAL_VARIABLE
from jobfleet.plugins.mesos.packing import (
    OfferPool,
    Shape,
    attributes,
    is_preemptible,
    placement_allows,
    scalars,
)
from jobfleet.plugins.mesos.settings import MesosSettings
from jobfleet.plugins.mesos.state import Journal

log = logging.getLogger(__name__)

EXECUTOR_ID = "jobfleet"
_ID = re.compile(r"jf-[0-9a-f]{10}-[0-9a-f]{10}(?:_\d{1,7})?")
_TICK = 0.25  # seconds between the monitor's checks
_REVIVE_GAP = 0.25  # seconds between two REVIVE calls at most
_START_WAIT = 10.0  # seconds start() waits for the first subscription's outcome
_REFUSED = frozenset({401, 403})  # SUBSCRIBE answers no retry can change


@dataclass
class _Task:
    did: str
    name: str
    argv: list[str]
    shape: Shape
    preemptible: bool
    step: int | None
    env: dict[str, str]
    submitted: float
    state: str = "WAITING"  # WAITING, LAUNCHED, or the last active TASK_* state
    agent: str | None = None
    killed: bool = False

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": self.argv,
            "shape": self.shape.as_dict(),
            "preemptible": self.preemptible,
            "step": self.step,
            "env": self.env,
            "submitted": self.submitted,
        }

    @classmethod
    def from_spec(cls, did: str, spec: dict[str, Any]) -> _Task:
        return cls(
            did=did,
            name=str(spec.get("name") or did),
            argv=[str(a) for a in spec["argv"]],
            shape=Shape.from_dict(spec.get("shape") or {}),
            preemptible=bool(spec.get("preemptible")),
            step=spec.get("step"),
            env=dict(spec.get("env") or {}),
            submitted=float(spec.get("submitted") or time.time()),
        )


@dataclass
class _Agent:
    agent_id: str
    hostname: str
    attributes: dict[str, str]
    capacity: dict[str, float] = field(default_factory=dict)
    last_seen: float = 0.0
    report: dict[str, Any] | None = None
    active: bool = True


class MesosDistributor(BaseClusterDistributor):
    """Runs the worker-node wrappers as Mesos tasks through jobfleet's executor."""

    cluster_type = "mesos"
    settings_class = MesosSettings
    settings: MesosSettings
    needs_network_channel = True
    """Agents share no file system with the host: the host serves an http:// channel."""

    def __init__(self, cluster_name: str, *args: Any, **connection_parameters: Any) -> None:
        super().__init__(cluster_name, *args, **connection_parameters)
        self._journal = Journal(self.state_dir)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._tasks: dict[str, _Task] = {}  # submitted and not ended
        self._waiting: dict[str, _Task] = {}  # of those, waiting for an offer
        self._ended: dict[str, RemoteExitInfo] = {}
        self._killed: set[str] = set()
        self._agents: dict[str, _Agent] = {}
        self._ignored: set[str] = set()
        self._driver: Any = None
        self._secret: str | None = None
        self._framework_id: str | None = None
        self._run = ""
        self._suppressed = False
        self._revive_wanted = False
        self._last_revive = 0.0
        self._failure: str | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._disconnects = 0
        self._down_since: float | None = None
        self._master_index = 0
        self._registered = threading.Event()
        self._refused: str | None = None  # why the master refused the framework, for good
        self.tasks_per_accept: list[int] = []
        """How many tasks each ACCEPT launched (for tests and benchmarks)."""

    # -- the protocol ---------------------------------------------------------------------------

    @property
    def framework_id(self) -> str | None:
        return self._framework_id

    def start(self) -> None:
        if self._driver is not None:
            return
        self._secret = self.settings.read_secret()
        recovered = self._journal.load()
        self._run = recovered.run
        self._framework_id = recovered.framework_id
        with self._lock:
            for did, result in recovered.ended.items():
                self._ended[did] = exits.from_dict(result)
            self._killed |= recovered.killed
            for did, spec in recovered.specs.items():
                task = _Task.from_spec(did, spec)
                task.killed = did in self._killed
                self._tasks[did] = task
                if did in recovered.launched:
                    task.state, task.agent = "LAUNCHED", recovered.launched[did] or None
                elif not task.killed:
                    self._waiting[did] = task
            self._revive_wanted = bool(self._waiting)
        self._stopping.clear()
        self._refused = None
        self._driver = self._new_driver()
        self._driver.start()
        self._monitor = threading.Thread(target=self._watch, name="mesos-monitor", daemon=True)
        self._monitor.start()
        # The first subscription's outcome, so that refused credentials fail the start itself
        # (a master still unreachable after the wait is left to the driver's retries).
        deadline = time.monotonic() + _START_WAIT
        while not self._registered.wait(0.05) and self._refused is None:
            if time.monotonic() > deadline:
                log.warning(
                    "no Mesos master of %s answered within %.0f s; still trying",
                    self.settings.master,
                    _START_WAIT,
                )
                break
        if self._refused is not None:
            self._stopping.set()
            self._monitor.join(timeout=5)
            self._monitor = None
            self._driver = None
            self._journal.close()
            raise BackendError(self._refused)

    def stop(self) -> None:
        """Kill every task of the run, tear the framework down, forget the journal."""
        driver = self._driver
        if driver is None:
            return
        with self._lock:
            live = list(self._tasks)
        if live:
            self.terminate_task_instances(live)
        self._stopping.set()
        connected = bool(driver.connected)
        driver.stop(failover=False)  # TEARDOWN from pymesos' I/O thread as it ends
        driver.join()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        self._driver = None
        self.packer.close()
        if connected:
            self._journal.forget()
        else:
            self._journal.close()
            log.warning(
                "the Mesos master was unreachable at stop: framework %s is left to its "
                "failover timeout",
                self._framework_id,
            )

    def wrapper_argv(self, command: str) -> list[str]:
        """The wrapper as installed on the agents (`worker_command`, or $JOBFLEET_WORKER_NODE),
        with the channel address agents reach (`channel_address`)."""
        argv = super().wrapper_argv(command)[len(entry_point_argv()) :]
        if os.environ.get(ENTRY_POINT_VARIABLE, "").strip():
            entry = entry_point_argv()
        else:
            entry = shlex.split(self.settings.worker_command)
        if self.settings.channel_address:
            argv[argv.index("--host-url") + 1] = self.settings.channel_address
        return [*entry, *argv]

    def wrapper_options(self) -> list[str]:
        return ["--kill-grace", str(self.settings.kill_grace)]

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        request = ResourceRequest.parse(requested_resources)
        did = self._new_id()
        self._queue([self._task(did, name, command, request, None)])
        return did

    def submit_array_to_batch_distributor(
        self,
        command: str,
        name: str,
        requested_resources: dict[str, Any],
        array_length: int,
    ) -> dict[int, str]:
        self.check_array_length(array_length)

        def submit_elements(
            element_command: str, resources: Mapping[str, Any], elements: int
        ) -> dict[int, str]:
            return self._submit_array(element_command, name, resources, elements)

        packed = self.submit_packed_array(
            command, requested_resources, array_length, submit_elements
        )
        if packed is not None:
            return packed
        return self._submit_array(command, name, requested_resources, array_length)

    def _submit_array(
        self, command: str, name: str, requested_resources: Mapping[str, Any], array_length: int
    ) -> dict[int, str]:
        request = ResourceRequest.parse(requested_resources)
        base = self._new_id()
        tasks = [
            self._task(f"{base}_{step}", f"{name}-{step}", command, request, step)
            for step in range(array_length)
        ]
        self._queue(tasks)
        return {step: task.did for step, task in enumerate(tasks)}

    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        """From the callbacks' state: no call to the master, however many ids (a packed
        member: while its array element's task is)."""
        return self.packed_submitted_or_running(distributor_ids, self._present)

    def _present(self, distributor_ids: list[str]) -> set[str]:
        with self._lock:
            if self._failure is not None:
                raise BackendError(self._failure)
            return {did for did in distributor_ids if isinstance(did, str) and did in self._tasks}

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        return self.packed_queueing_errors(distributor_ids, self._queueing_errors)

    def _queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        now = time.time()
        errors: dict[str, str] = {}
        with self._lock:
            agents = [a for a in self._agents.values() if a.active and a.capacity]
            if not agents:
                return errors
            for did in distributor_ids:
                task = self._waiting.get(did) if isinstance(did, str) else None
                if task is None or now - task.submitted < self.settings.unplaceable_timeout:
                    continue
                if not any(self._could_ever_hold(agent, task) for agent in agents):
                    largest = max(agents, key=lambda a: (a.capacity.get("cpus", 0), a.hostname))
                    errors[did] = (
                        f"no Mesos agent can hold the task (needs {_shape_text(task.shape)}; "
                        f"{len(agents)} agent(s) known, the largest {largest.hostname} has "
                        f"{_shape_text(Shape.from_dict(largest.capacity))}"
                        + (
                            ", placement or preemptibility excludes some"
                            if self._constrained()
                            else ""
                        )
                        + ")"
                    )
        return errors

    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        return self.packed_exit_info(distributor_id, self._exit_info)

    def _exit_info(self, distributor_id: str) -> RemoteExitInfo:
        try:
            with self._lock:
                if distributor_id in self._ended:
                    return self._ended[distributor_id]
                task = self._tasks.get(distributor_id)
                if task is None:
                    return RemoteExitInfo.unknown(
                        f"{distributor_id!r} is not a Mesos task of this run"
                    )
                where = f" on agent {task.agent}" if task.agent else ""
                return RemoteExitInfo.unknown(
                    f"the Mesos task {distributor_id} is {task.state}{where}", finalized=False
                )
        except Exception as exc:  # the protocol: never raise
            return RemoteExitInfo.unknown(
                f"reading the task's state failed: {exc}", finalized=False
            )

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        """Drop those still waiting (they never launch); KILL the launched ones and wait for
        their terminal updates (up to `kill_wait`). A packed member through the channel,
        unless its whole element goes."""
        self.terminate_packed(distributor_ids, self._terminate, self._still_there)

    def _still_there(self, distributor_id: str) -> bool:
        with self._lock:
            return distributor_id in self._tasks

    def _terminate(self, distributor_ids: list[str]) -> None:
        to_kill: list[str] = []
        with self._lock:
            for did in dict.fromkeys(distributor_ids):
                task = self._tasks.get(did) if isinstance(did, str) else None
                if task is None:
                    continue
                task.killed = True
                self._killed.add(did)
                if did in self._waiting:
                    self._end(task, exits.dropped_info(did))
                else:
                    to_kill.append(did)
            if not to_kill:
                return
            self._journal.write({"kill": to_kill})
            for did in to_kill:
                self._kill(did)
            deadline = time.monotonic() + self.settings.kill_wait
            while any(did in self._tasks for did in to_kill):
                if self._refused is not None:
                    break  # no driver: no terminal update can come
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "%d killed Mesos task(s) had not ended after %s s",
                        sum(did in self._tasks for did in to_kill),
                        self.settings.kill_wait,
                    )
                    break
                self._changed.wait(timeout=min(left, 1.0))

    # -- ScalableDistributor ----------------------------------------------------------------------

    def get_nodes(
        self, preemptible: bool | None = None, timeout: float | None = None
    ) -> dict[str, NodeInfo]:
        """Agents seen in offers or executor reports, by hostname: Mesos resources (the largest
        offer seen, with our tasks), the executor's measured load, what our tasks requested.
        `preemptible`: only (not) preemptible agents; `timeout`: only agents heard of within
        that many seconds."""
        now = time.time()
        marker = self.settings.preemptible_marker()
        nodes: dict[str, NodeInfo] = {}
        with self._lock:
            for agent in self._agents.values():
                spot = is_preemptible(agent.attributes, marker)
                if not agent.active or (preemptible is not None and spot != preemptible):
                    continue
                if timeout is not None and now - agent.last_seen > timeout:
                    continue
                ours = [
                    t.shape
                    for t in self._tasks.values()
                    if t.agent == agent.agent_id and t.did not in self._waiting
                ]
                cores = sum(s.cpus for s in ours)
                memory = int(sum(s.mem for s in ours) * MIB)
                report = agent.report or {}
                nodes[agent.hostname] = NodeInfo(
                    cores_used=float(report.get("cores_used", cores)),
                    memory_used=int(report.get("memory_used", memory)),
                    cores_total=float(agent.capacity.get("cpus") or report.get("cores_total", 0)),
                    memory_total=int(agent.capacity.get("mem", 0) * MIB)
                    or int(report.get("memory_total", 0)),
                    requested_cores=cores,
                    requested_memory=memory,
                    workers=len(ours),
                    last_seen=agent.last_seen,
                    preemptible=spot,
                )
        return nodes

    def node_in_use(self, node: str) -> bool:
        with self._lock:
            return any(
                t.agent is not None and self._names(t.agent) & {node}
                for t in self._tasks.values()
                if t.did not in self._waiting
            )

    def ignore_node(self, node: str) -> None:
        """No new task is placed on this agent (hostname or agent id); its tasks go on."""
        with self._lock:
            self._ignored.add(node)

    def unignore_node(self, node: str) -> None:
        with self._lock:
            self._ignored.discard(node)
            self._revive_wanted = bool(self._waiting)

    # -- submission -------------------------------------------------------------------------------

    def _new_id(self) -> str:
        if not self._run:
            raise BackendError("The Mesos distributor is not started.")
        return f"jf-{self._run}-{secrets.token_hex(5)}"

    def _task(
        self, did: str, name: str, command: str, request: ResourceRequest, step: int | None
    ) -> _Task:
        settings = self.settings
        memory = request.memory or parse_memory(settings.default_memory, field="default_memory")
        disk = (
            0
            if settings.default_disk.strip() == "0"
            else parse_memory(settings.default_disk, field="default_disk")
        )
        shape = Shape(
            cpus=float(request.cores or settings.default_cores),
            mem=float(math.ceil(memory / MIB)),
            disk=float(math.ceil(disk / MIB)),
            gpus=float(request.gpus or 0),
        )
        env = settings.passed_env(without_host_variables(os.environ))
        return _Task(
            did=did,
            name=name,
            argv=self.wrapper_argv(command),
            shape=shape,
            preemptible=request.preemptible,
            step=step,
            env=env,
            submitted=time.time(),
        )

    def _queue(self, tasks: list[_Task]) -> None:
        with self._lock:
            self._journal.write({"submit": {t.did: t.spec() for t in tasks}})
            for task in tasks:
                self._tasks[task.did] = task
                self._waiting[task.did] = task
            self._revive_wanted = True
        self._maybe_revive()

    def _maybe_revive(self) -> None:
        with self._lock:
            if not self._waiting or not self._revive_wanted:
                return
            if time.monotonic() - self._last_revive < _REVIVE_GAP:
                return  # the monitor revives a moment later
            driver = self._driver
            if driver is None or not driver.connected or self._framework_id is None:
                return
            self._revive_wanted = False
            self._suppressed = False
            self._last_revive = time.monotonic()
            self._call(driver.reviveOffers)

    # -- the scheduler's callbacks (pymesos' I/O thread) ------------------------------------------

    def _on_registered(self, driver: Any, framework_id: str, again: bool) -> None:
        with self._lock:
            if framework_id != self._framework_id:
                self._journal.write({"framework": framework_id})
            self._framework_id = framework_id
            self._failure = None
            self._disconnects = 0
            self._down_since = None
            live = [t.did for t in self._tasks.values() if t.did not in self._waiting]
            killed = [did for did in live if self._tasks[did].killed]
            log.info(
                "Mesos framework %s %s; reconciling %d task(s)",
                framework_id,
                "re-subscribed" if again or live else "subscribed",
                len(live),
            )
            if live:
                self._call(driver.reconcileTasks, [{"task_id": {"value": did}} for did in live])
            for did in killed:
                self._kill(did)
            if self._waiting:
                self._revive_wanted = True
            else:
                self._suppressed = True
                self._call(driver.suppressOffers)
        self._registered.set()
        self._maybe_revive()

    def _on_offers(self, driver: Any, offers: list[dict[str, Any]]) -> None:
        settings = self.settings
        required = settings.placement_constraints()
        marker = settings.preemptible_marker()
        filters = {"refuse_seconds": settings.refuse_seconds}
        declined: list[dict[str, Any]] = []
        with self._lock:
            order = sorted(
                self._waiting.values(), key=lambda t: (t.shape.size(), -t.submitted), reverse=True
            )
            for offer in offers:
                agent = self._see_agent(offer)
                if self._names(agent.agent_id) & self._ignored or self._stopping.is_set():
                    declined.append(offer["id"])
                    continue
                pool = OfferPool(offer)
                chosen: list[tuple[_Task, list[dict[str, Any]]]] = []
                for task in order:
                    if task.did not in self._waiting or not placement_allows(
                        agent.attributes, required, marker, task.preemptible
                    ):
                        continue
                    taken = pool.take(task.shape)
                    if taken is not None:
                        chosen.append((task, taken))
                        del self._waiting[task.did]
                if not chosen:
                    declined.append(offer["id"])
                    continue
                ids = [task.did for task, _ in chosen]
                self._journal.write({"launch": ids, "agent": agent.agent_id})
                infos = []
                for task, taken in chosen:
                    task.state, task.agent = "LAUNCHED", agent.agent_id
                    infos.append(self._task_info(task, agent.agent_id, taken))
                self.tasks_per_accept.append(len(infos))
                # Leftovers come back at once while work waits, else after refuse_seconds.
                left = {"refuse_seconds": 0.0 if self._waiting else settings.refuse_seconds}
                self._call(driver.launchTasks, offer["id"], infos, left)
            if declined:
                self._call(driver.declineOffer, declined, filters)
                self._revive_wanted = bool(self._waiting)
            if not self._waiting and not self._suppressed:
                self._suppressed = True
                self._call(driver.suppressOffers)

    def _on_update(self, driver: Any, status: dict[str, Any]) -> None:
        did = str((status.get("task_id") or {}).get("value") or "")
        state = str(status.get("state") or "")
        with self._lock:
            task = self._tasks.get(did)
            if task is not None and state in exits.ACTIVE:
                task.state = state
                agent = (status.get("agent_id") or {}).get("value")
                task.agent = str(agent) if agent else task.agent
                if task.killed:
                    self._kill(did)
            elif task is not None and state in exits.TERMINAL:
                self._end(task, exits.exit_info(status, killed_by_us=task.killed))
                if self._waiting:
                    self._revive_wanted = True
        # Only now that the outcome is recorded (and journalled).
        if "uuid" in status:
            self._call(driver.acknowledgeStatusUpdate, status)

    def _on_message(self, agent_id: str, data: object) -> None:
        payload = exits.decode_payload(data)
        node = (payload or {}).get("node")
        if not isinstance(node, dict):
            return
        with self._lock:
            agent = self._agents.get(agent_id)
            if agent is None:
                agent = self._agents[agent_id] = _Agent(
                    agent_id, str(node.get("hostname") or agent_id), {}
                )
            agent.report = node
            agent.last_seen = time.time()

    def _on_agent_lost(self, agent_id: str) -> None:
        with self._lock:
            agent = self._agents.get(agent_id)
            if agent is not None:
                agent.active = False
            for task in list(self._tasks.values()):
                if task.agent == agent_id and task.did not in self._waiting:
                    info = (
                        exits.exit_info(
                            {"state": "TASK_KILLED", "task_id": {"value": task.did}},
                            killed_by_us=True,
                        )
                        if task.killed
                        else exits.agent_lost_info(task.did, agent_id)
                    )
                    self._end(task, info)

    def _on_error(self, message: str) -> None:
        log.error("the Mesos master reported an error: %s", message)
        with self._lock:
            self._failure = f"the Mesos master reported an error: {message}"
            if "removed" in message.lower() or "completed" in message.lower():
                # The framework is gone (its failover timeout passed): its tasks with it.
                for task in list(self._tasks.values()):
                    if task.did not in self._waiting:
                        self._end(
                            task,
                            RemoteExitInfo.unknown(
                                f"lost: the framework {self._framework_id} was removed by the "
                                f"master ({message})"
                            ),
                        )
                self._framework_id = None

    def _on_disconnected(self) -> None:
        """Back off before pymesos reconnects (it would at once on a closed stream)."""
        self._disconnects += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._stopping.wait(min(5.0, 0.25 * 2 ** min(self._disconnects - 1, 5)))

    # -- state ------------------------------------------------------------------------------------

    def _end(self, task: _Task, info: RemoteExitInfo) -> None:
        """Record an outcome (journal first); the caller holds the lock."""
        self._journal.write({"end": {task.did: exits.to_dict(info)}})
        self._ended[task.did] = info
        self._tasks.pop(task.did, None)
        self._waiting.pop(task.did, None)
        self._changed.notify_all()

    def _see_agent(self, offer: dict[str, Any]) -> _Agent:
        agent_id = str((offer.get("agent_id") or {}).get("value") or "")
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = _Agent(agent_id, str(offer.get("hostname") or ""), {})
        agent.hostname = str(offer.get("hostname") or agent.hostname or agent_id)
        agent.attributes = attributes(offer)
        agent.active = True
        agent.last_seen = time.time()
        offered = scalars(offer.get("resources") or [])
        ours = [
            t.shape
            for t in self._tasks.values()
            if t.agent == agent_id and t.did not in self._waiting
        ]
        for name, value in offered.items():
            used = sum(getattr(s, name) for s in ours)
            agent.capacity[name] = max(agent.capacity.get(name, 0.0), value + used)
        return agent

    def _could_ever_hold(self, agent: _Agent, task: _Task) -> bool:
        return task.shape.fits(agent.capacity) and placement_allows(
            agent.attributes,
            self.settings.placement_constraints(),
            self.settings.preemptible_marker(),
            task.preemptible,
        )

    def _constrained(self) -> bool:
        return bool(self.settings.placement_constraints()) or any(
            is_preemptible(a.attributes, self.settings.preemptible_marker())
            for a in self._agents.values()
        )

    def _names(self, agent_id: str) -> set[str]:
        agent = self._agents.get(agent_id)
        return {agent_id, agent.hostname} if agent is not None else {agent_id}

    def _task_info(
        self, task: _Task, agent_id: str, resources: list[dict[str, Any]]
    ) -> dict[str, Any]:
        data = {
            "argv": task.argv,
            "env": task.env,
            "step": task.step,
            "kill_grace": self.settings.kill_grace,
            # The channel token: only the executor reads it (see docs/security.md, Mesos).
            "token": self.channel_token,
        }
        return {
            "name": task.name[:200],
            "task_id": {"value": task.did},
            "agent_id": {"value": agent_id},
            "resources": resources,
            "executor": self._executor_info(),
            "data": base64.b64encode(json.dumps(data).encode()).decode("ascii"),
        }

    def _executor_info(self) -> dict[str, Any]:
        interval = f"{self.settings.node_report_interval:g}"
        return {
            "executor_id": {"value": EXECUTOR_ID},
            "name": "jobfleet executor",
            "command": {
                "value": self.settings.executor_command,
                "shell": True,
                "environment": {
                    "variables": [{"name": REPORT_INTERVAL_VARIABLE, "value": interval}]
                },
            },
        }

    def _kill(self, did: str) -> None:
        driver = self._driver
        if driver is not None:
            self._call(driver.killTask, {"value": did})

    # -- the driver -------------------------------------------------------------------------------

    def _framework_info(self) -> dict[str, Any]:
        settings = self.settings
        info: dict[str, Any] = {
            "user": settings.user or getpass.getuser(),
            "name": settings.framework_name,
            "role": settings.role,
            "failover_timeout": settings.failover_timeout,
            "checkpoint": True,
            "hostname": os.uname().nodename,
        }
        if settings.principal:
            info["principal"] = settings.principal
        if self._framework_id:
            info["id"] = {"value": self._framework_id}
        return info

    def _new_driver(self) -> Any:
        pymesos = _pymesos.load()
        masters = self.settings.masters()
        self._registered.clear()
        return pymesos.MesosSchedulerDriver(
            _Scheduler(self),
            self._framework_info(),
            masters[self._master_index % len(masters)],
            use_addict=False,
            implicit_acknowledgements=False,
            principal=self.settings.principal if self._secret else None,
            secret=self._secret,
            failover=True,  # an I/O thread that dies must not tear the framework down
        )

    def _watch(self) -> None:
        """Restart a dead driver (with backoff), move to the next master when one stays
        unreachable, and send the REVIVE a submission wanted."""
        restarts = 0
        while not self._stopping.wait(_TICK):
            driver = self._driver
            if driver is None:
                return
            if driver.aborted and not self._stopping.is_set():
                delay = min(30.0, 0.5 * 2**restarts)
                restarts += 1
                failure = _pymesos.take_failure()
                if isinstance(failure, _pymesos.MasterRefused) and failure.code in _REFUSED:
                    # No new driver: the same credentials would be refused again.
                    message = self._refusal_message(failure)
                    log.error("%s", message)
                    with self._lock:
                        self._failure = self._refused = message
                    return
                why = self._sanitized(failure)
                with self._lock:
                    # Status rounds say so (BackendError) until a driver subscribes again.
                    self._failure = f"the Mesos scheduler driver stopped: {why}"
                log.warning(
                    "the Mesos scheduler driver stopped (%s); a new one in %.1f s", why, delay
                )
                if self._stopping.wait(delay):
                    return
                self._master_index += 1
                self._driver = self._new_driver()
                self._driver.start()
                continue
            if driver.connected:
                restarts = 0
            masters = self.settings.masters()
            down = self._down_since
            if (
                len(masters) > 1
                and down is not None
                and not driver.connected
                and time.monotonic() - down > 10.0
            ):
                self._master_index += 1
                self._down_since = time.monotonic()
                master = masters[self._master_index % len(masters)]
                log.warning("no Mesos master answered for 10 s: trying %s", master)
                if not master.startswith(("zk://", "zoo://")):
                    driver.change_master(master)
            self._maybe_revive()

    def _refusal_message(self, refused: _pymesos.MasterRefused) -> str:
        """What to check when the master refuses the framework: the settings, never the
        secret."""
        settings = self.settings
        master = f"The Mesos master {refused.master}"
        if refused.code == 401 and not self._secret:
            return (
                f"{master} requires authentication (HTTP 401 at SUBSCRIBE) and the framework "
                "sent no credentials: set `principal` (--mesos-principal) with `secret_file` "
                "(--mesos-secret-file) or `secret_variable`."
            )
        if settings.secret_file is not None:
            where = f"the file {settings.secret_file} (setting `secret_file`)"
        else:
            where = f"the variable ${settings.secret_variable} (setting `secret_variable`)"
        if refused.code == 401:
            return (
                f"{master} refused the framework's credentials (HTTP 401 at SUBSCRIBE): check "
                f"the principal {settings.principal!r} (setting `principal`) and the secret in "
                f"{where}."
            )
        return (
            f"{master} refused the framework (HTTP {refused.code} at SUBSCRIBE): check that "
            f"the principal {settings.principal!r} (setting `principal`) may register with "
            f"the role {settings.role!r} (setting `role`), and the secret in {where}."
        )

    def _call(self, method: Any, *args: Any) -> None:
        """A driver call; a failure is logged by its first line only (pymesos puts the whole
        request body, task data included, in its exception messages)."""
        try:
            method(*args)
        except Exception as exc:
            text = self._sanitized(exc)
            log.warning("the Mesos call %s failed: %s", getattr(method, "__name__", "?"), text)

    def _sanitized(self, exc: BaseException | None) -> str:
        """An exception's first line, without the token or the secret."""
        if exc is None:
            return "no reason given"
        text = str(exc).split("\n", 1)[0][:300] or type(exc).__name__
        for secret in (self.channel_token, self._secret):
            if secret:
                text = text.replace(secret, "***")
        return text


class _Scheduler:
    """The pymesos `Scheduler` callbacks, handed on to the distributor. None raises: pymesos
    would end its I/O thread (and log the exception with whatever it held)."""

    def __init__(self, owner: MesosDistributor) -> None:
        self.owner = owner

    def _guard(self, what: str, function: Any, *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            log.exception("the Mesos callback %s failed", what)

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        self._guard("registered", self.owner._on_registered, driver, framework_id["value"], False)

    def reregistered(self, driver: Any, master_info: Any) -> None:
        fid = driver.framework_id
        self._guard("reregistered", self.owner._on_registered, driver, fid, True)

    def disconnected(self, driver: Any) -> None:
        self._guard("disconnected", self.owner._on_disconnected)

    def resourceOffers(self, driver: Any, offers: Any) -> None:
        self._guard("resourceOffers", self.owner._on_offers, driver, offers)

    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        pass  # offers are never held: each is accepted or declined as it comes

    def inverseOffers(self, driver: Any, offers: Any) -> None:
        pass

    def inverseOfferRescinded(self, driver: Any, offer_id: Any) -> None:
        pass

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self._guard("statusUpdate", self.owner._on_update, driver, status)

    def operationStatusUpdate(self, driver: Any, status: Any) -> None:
        pass

    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        self._guard("frameworkMessage", self.owner._on_message, str(agent_id.get("value")), data)

    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        self._guard("slaveLost", self.owner._on_agent_lost, str(agent_id.get("value")))

    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: Any) -> None:
        log.info("the jobfleet executor on agent %s ended (%s)", agent_id.get("value"), status)

    def error(self, driver: Any, message: str) -> None:
        self._guard("error", self.owner._on_error, str(message))

    def processHeartBeat(self, driver: Any) -> None:
        pass


def _shape_text(shape: Shape) -> str:
    parts = [f"{shape.cpus:g} cores", f"{shape.mem:g} MB memory"]
    if shape.disk:
        parts.append(f"{shape.disk:g} MB disk")
    if shape.gpus:
        parts.append(f"{shape.gpus:g} GPUs")
    return ", ".join(parts)


def parse_id(did: object) -> bool:
    """Whether `did` has the shape of an id this backend hands out."""
    return isinstance(did, str) and _ID.fullmatch(did) is not None
