"""An agent: the v1 executor API (`POST /api/v1/executor` on its own port), executor processes,
the command executor, and the status update manager (reliable updates, retried until the
scheduler acknowledges them, in order per task, none after a terminal one).

Executors run as local processes, each in its own session (pymesos' executor ends with
`killpg(0, SIGKILL)`), with a sandbox directory as cwd. A container is everything carrying its
`MESOS_EMULATOR_CONTAINER_ID` environment marker (the emulator's stand-in for a cgroup): killing
it kills the executor's process group and any process that inherited the marker, even one that
started its own session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

from . import resources as rs
from .http import HttpError, HttpServer, Response, Stream, StreamResponse, parse_json
from .state import EXECUTOR_STATES, TERMINAL, Framework, Task, new_uuid, status, uuid_bytes

if TYPE_CHECKING:
    from . import MesosCluster

MARKER = "MESOS_EMULATOR_CONTAINER_ID"


@dataclass
class Executor:
    framework_id: str
    executor_id: str
    info: dict[str, Any] | None  # None: the command executor of one task
    sandbox: Path
    container_id: str
    resources: dict[str, float]
    command_task: Task | None = None
    proc: subprocess.Popen[bytes] | None = None
    stream: Stream | None = None
    queued: list[Task] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    state: str = "launching"  # launching, running, terminating, terminated
    started: float = 0.0
    idle_since: float | None = None
    kill_at: float | None = None
    kill_requested: bool = False
    reason: str = "REASON_EXECUTOR_TERMINATED"
    silent: bool = False  # no updates, no FAILURE when it ends (framework or agent removed)

    def live_tasks(self) -> list[Task]:
        return [t for t in [*self.queued, *self.tasks.values()] if not t.terminal]


@dataclass
class UpdateStream:
    task: Task
    pending: deque[tuple[dict[str, Any], Executor | None]] = field(default_factory=deque)
    last_sent: float | None = None
    terminated: bool = False


class Agent:
    def __init__(
        self,
        cluster: MesosCluster,
        agent_id: str,
        hostname: str,
        total: dict[str, float],
        attributes: dict[str, str | float],
    ) -> None:
        self.c = cluster
        self.id = agent_id
        self.hostname = hostname
        self.total = total
        self.attributes = attributes
        self.active = True
        self.root = cluster.root / "agents" / agent_id
        self.root.mkdir(parents=True, exist_ok=True)
        self.executors: dict[tuple[str, str], Executor] = {}
        self.ended: list[Executor] = []
        self.updates: dict[tuple[str, str], UpdateStream] = {}
        self.tasks: dict[tuple[str, str], Task] = {}  # launched here, not yet completed
        self.internal_errors = cluster.internal_errors
        self.server = HttpServer(self, agent_id)
        self.port = self.server.port
        self.address = self.server.address

    @property
    def stopping(self) -> bool:
        return self.c.stopping

    # -- accounting ----------------------------------------------------------------------------
    def used(self) -> dict[str, float]:
        total = rs.empty()
        for t in self.tasks.values():
            if not t.terminal:
                total = rs.add(total, t.resources)
        for ex in self.executors.values():
            total = rs.add(total, ex.resources)
        return total

    def has_executor(self, fid: str, eid: str) -> bool:
        return (fid, eid) in self.executors

    def executor_info(self, fid: str, eid: str) -> dict[str, Any] | None:
        ex = self.executors.get((fid, eid))
        return None if ex is None else ex.info

    def info(self) -> dict[str, Any]:
        return {
            "id": {"value": self.id},
            "hostname": self.hostname,
            "port": self.port,
            "resources": rs.to_json(self.total, "*"),
            "attributes": rs.attributes_json(self.attributes),
        }

    # -- HTTP: the executor API ----------------------------------------------------------------
    def log_request(self, method: str, path: str, headers: Any, body: bytes) -> None:
        self.c._log_request(self.id, method, path, headers, body)

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> Response | StreamResponse:
        route = urlsplit(path).path.rstrip("/")
        if route not in ("/api/v1/executor", "/slave(1)/api/v1/executor"):
            raise HttpError(404, "Not Found")
        if method != "POST":
            raise HttpError(405, f"Expecting a 'POST' request, received '{method}'")
        call = parse_json(body, headers.get("Content-Type"))
        ctype = call.get("type")
        fid = (call.get("framework_id") or {}).get("value")
        eid = (call.get("executor_id") or {}).get("value")
        if not isinstance(ctype, str):
            raise HttpError(400, "Expecting 'type' to be present")
        if not isinstance(fid, str) or not isinstance(eid, str):
            raise HttpError(400, "Expecting 'framework_id' and 'executor_id' to be present")
        with self.c.lock:
            self.c.executor_calls[ctype] += 1
            if not self.active:
                raise HttpError(503, "Agent is shutting down")
            ex = self.executors.get((fid, eid))
            if ex is None or ex.info is None or ex.state == "terminated":
                raise HttpError(400, f"Executor '{eid}' of framework '{fid}' is not known")
            if ctype == "SUBSCRIBE":
                if not isinstance(call.get("subscribe"), dict):
                    raise HttpError(400, "Expecting 'subscribe' to be present")
                return StreamResponse(self._subscribe(ex))
            if ex.stream is None:
                raise HttpError(403, "Executor is not subscribed")
            if ctype == "UPDATE":
                self._executor_update(ex, call.get("update"))
            elif ctype == "MESSAGE":
                data = (call.get("message") or {}).get("data")
                if not isinstance(data, str):
                    raise HttpError(400, "Expecting 'message.data' to be present")
                self.c._master.framework_message(fid, self.id, eid, data)
            else:
                raise HttpError(400, f"Unknown executor call type {ctype}")
            self.c.wake()
        return Response(202)

    def _subscribe(self, ex: Executor) -> Stream:
        if ex.stream is not None:
            old, ex.stream = ex.stream, None
            old.on_close = None
            old.cut_now()
        stream = Stream(str(uuid.uuid4()))
        stream.on_close = self._executor_stream_closed
        ex.stream = stream
        if ex.state == "launching":
            ex.state = "running"
        fw = self.c._master.frameworks.get(ex.framework_id)
        assert ex.info is not None
        stream.send(
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": ex.info,
                    "framework_info": fw.info if fw is not None else {},
                    "agent_info": self.info(),
                    "container_id": {"value": ex.container_id},
                },
            }
        )
        if ex.state == "terminating":
            stream.send({"type": "SHUTDOWN"})
            return stream
        for task in ex.queued:
            ex.tasks[task.task_id] = task
            stream.send({"type": "LAUNCH", "launch": {"task": task.info}})
        ex.queued.clear()
        if not ex.live_tasks():
            self._shutdown(ex)  # the real agent shuts down an executor with nothing to run
        return stream

    def _executor_stream_closed(self, stream: Stream) -> None:
        with self.c.lock:
            for ex in self.executors.values():
                if ex.stream is stream:
                    ex.stream = None
                    # Not checkpointing: a disconnected executor is killed.
                    if ex.state != "terminated":
                        self._kill_container(ex)
                    break

    def _executor_update(self, ex: Executor, update: Any) -> None:
        st = (update or {}).get("status") if isinstance(update, dict) else None
        if not isinstance(st, dict):
            raise HttpError(400, "Expecting 'update.status' to be present")
        tid = (st.get("task_id") or {}).get("value")
        if not isinstance(tid, str):
            raise HttpError(400, "Expecting 'update.status.task_id' to be present")
        if uuid_bytes(st.get("uuid")) is None:
            raise HttpError(400, "Expecting 'uuid' to be present and a valid UUID")
        state = st.get("state")
        if state == "TASK_STAGING":
            raise HttpError(400, "Received TASK_STAGING from executor")
        if state not in EXECUTOR_STATES:
            raise HttpError(400, f"Invalid task state '{state}'")
        if st.get("source", "SOURCE_EXECUTOR") != "SOURCE_EXECUTOR":
            raise HttpError(400, "Received wrong status update source from executor")
        task = ex.tasks.get(tid)
        if task is None:
            raise HttpError(400, f"Task '{tid}' is not known to executor '{ex.executor_id}'")
        st = dict(st)
        st["agent_id"] = {"value": self.id}
        st["executor_id"] = {"value": ex.executor_id}
        st.setdefault("source", "SOURCE_EXECUTOR")
        st.setdefault("timestamp", time.time())
        self.status_update(task, st, ex)

    # -- status update manager -----------------------------------------------------------------
    def status_update(self, task: Task, st: dict[str, Any], ex: Executor | None) -> None:
        key = (task.framework_id, task.task_id)
        stream = self.updates.get(key)
        if stream is None:
            if task.completed:
                self.c.dropped_updates.append(st)
                return
            stream = self.updates[key] = UpdateStream(task)
        if stream.terminated:
            self.c.dropped_updates.append(st)  # never an update after a terminal one
            return
        stream.pending.append((st, ex))
        if st["state"] in TERMINAL:
            stream.terminated = True
        self.c._master.task_state(task, st)
        if len(stream.pending) == 1:
            self._forward(stream)
        self.c.wake()

    def _forward(self, stream: UpdateStream) -> None:
        st, _ = stream.pending[0]
        stream.last_sent = time.monotonic()
        self.c._master.forward_update(stream.task.framework_id, st)

    def acknowledge(self, fid: str, tid: str, raw_uuid: bytes) -> None:
        stream = self.updates.get((fid, tid))
        if stream is None or not stream.pending:
            return
        st, ex = stream.pending[0]
        if uuid_bytes(st["uuid"]) != raw_uuid:
            return  # not the update at the head of the stream: ignored, as the real agent does
        stream.pending.popleft()
        self.c.acknowledged += 1
        if ex is not None and ex.stream is not None:
            ex.stream.send(
                {
                    "type": "ACKNOWLEDGED",
                    "acknowledged": {"task_id": st["task_id"], "uuid": st["uuid"]},
                }
            )
        if st["state"] in TERMINAL:
            del self.updates[(fid, tid)]
            self.tasks.pop((fid, tid), None)
            self.c._master.task_completed(stream.task)
        elif stream.pending:
            self._forward(stream)

    # -- launching -----------------------------------------------------------------------------
    def launch(self, fw: Framework, task: Task, executor: dict[str, Any] | None) -> None:
        self.tasks[(fw.id, task.task_id)] = task
        if executor is None:
            self._launch_command_task(fw, task)
            return
        eid = executor["executor_id"]["value"]
        ex = self.executors.get((fw.id, eid))
        if ex is not None and ex.state == "terminating":
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            self.status_update(
                task,
                status(
                    task,
                    state,
                    "SOURCE_AGENT",
                    reason="REASON_EXECUTOR_TERMINATED",
                    message="Executor terminating",
                    reliable=True,
                ),
                None,
            )
            return
        if ex is None:
            info = dict(executor)
            info["framework_id"] = {"value": fw.id}
            ex = self._new_executor(
                fw, eid, info, rs.parse(executor.get("resources"), set(fw.roles))
            )
            command = executor["command"]
            if not self._spawn(fw, ex, command):
                self.status_update(
                    task,
                    status(
                        task,
                        "TASK_FAILED",
                        "SOURCE_AGENT",
                        reason="REASON_CONTAINER_LAUNCH_FAILED",
                        message="Failed to launch the executor",
                        reliable=True,
                    ),
                    None,
                )
                del self.executors[(fw.id, eid)]
                return
        ex.idle_since = None
        if ex.stream is not None and ex.state == "running":
            ex.tasks[task.task_id] = task
            ex.stream.send({"type": "LAUNCH", "launch": {"task": task.info}})
        else:
            ex.queued.append(task)

    def _new_executor(
        self, fw: Framework, eid: str, info: dict[str, Any] | None, res: dict[str, float]
    ) -> Executor:
        container = str(uuid.uuid4())
        sandbox = self.root / "frameworks" / fw.id / "executors" / eid / "runs" / container
        sandbox.mkdir(parents=True, exist_ok=True)
        ex = Executor(fw.id, eid, info, sandbox, container, res, started=time.monotonic())
        self.executors[(fw.id, eid)] = ex
        return ex

    def _launch_command_task(self, fw: Framework, task: Task) -> None:
        ex = self._new_executor(fw, task.task_id, None, rs.empty())
        ex.command_task = task
        ex.tasks[task.task_id] = task
        if not self._spawn(fw, ex, task.info["command"]):
            del self.executors[(fw.id, task.task_id)]
            self.status_update(
                task,
                status(
                    task,
                    "TASK_FAILED",
                    "SOURCE_AGENT",
                    reason="REASON_CONTAINER_LAUNCH_FAILED",
                    message="Failed to launch the command",
                    reliable=True,
                ),
                None,
            )
            return
        ex.state = "running"
        self.status_update(
            task,
            status(task, "TASK_RUNNING", "SOURCE_EXECUTOR", reliable=True)
            | {"executor_id": {"value": task.task_id}},
            None,
        )

    def _spawn(self, fw: Framework, ex: Executor, command: dict[str, Any]) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESOS_")}
        env.update(
            {
                "MESOS_AGENT_ENDPOINT": self.address,
                "MESOS_FRAMEWORK_ID": fw.id,
                "MESOS_EXECUTOR_ID": ex.executor_id,
                "MESOS_DIRECTORY": str(ex.sandbox),
                "MESOS_SANDBOX": str(ex.sandbox),
                "MESOS_SLAVE_ID": self.id,
                "MESOS_AGENT_ID": self.id,
                "MESOS_SLAVE_PID": f"slave(1)@{self.address}",
                "MESOS_HTTP_COMMAND_EXECUTOR": "0",
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": (
                    f"{self.c.executor_shutdown_grace_period:g}secs"
                ),
                "MESOS_RECOVERY_TIMEOUT": "15mins",
                "MESOS_SUBSCRIPTION_BACKOFF_MAX": "2secs",
                MARKER: ex.container_id,
            }
        )
        if fw.info.get("checkpoint"):
            env["MESOS_CHECKPOINT"] = "1"
        for var in (command.get("environment") or {}).get("variables") or []:
            env[var["name"]] = var["value"]
        if command.get("shell", True):
            argv, executable = ["/bin/sh", "-c", command["value"]], None
        else:
            argv = list(command.get("arguments") or [command["value"]])
            executable = command["value"]
        out = open(ex.sandbox / "stdout", "ab")  # noqa: SIM115 - handed to the child
        err = open(ex.sandbox / "stderr", "ab")  # noqa: SIM115
        try:
            ex.proc = subprocess.Popen(
                argv,
                executable=executable,
                cwd=ex.sandbox,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            err.write(f"Failed to launch: {e}\n".encode())
            return False
        finally:
            out.close()
            err.close()
        ex.started = time.monotonic()
        threading.Thread(
            target=self._watch, args=(ex,), name=f"mesos-executor-{ex.executor_id}", daemon=True
        ).start()
        return True

    def _watch(self, ex: Executor) -> None:
        assert ex.proc is not None
        code = ex.proc.wait()
        try:
            with self.c.lock:
                self.executor_terminated(ex, code)
        except Exception:
            import traceback

            self.c.internal_errors.append(traceback.format_exc())

    # -- ending executors ----------------------------------------------------------------------
    def executor_terminated(self, ex: Executor, returncode: int) -> None:
        if ex.state == "terminated":
            return
        ex.state = "terminated"
        self._kill_container(ex)  # whatever it left behind
        if ex.stream is not None:
            stream, ex.stream = ex.stream, None
            stream.on_close = None
            stream.cut_now()
        if self.executors.get((ex.framework_id, ex.executor_id)) is ex:
            del self.executors[(ex.framework_id, ex.executor_id)]
        self.ended.append(ex)
        self.c.wake()
        if ex.silent or not self.active:
            return
        wstatus = -returncode if returncode < 0 else returncode << 8
        if ex.command_task is not None:
            task = ex.command_task
            if task.terminal:
                return
            if ex.kill_requested:
                st = status(task, "TASK_KILLED", "SOURCE_EXECUTOR", message="Command terminated")
            elif returncode == 0:
                st = status(
                    task, "TASK_FINISHED", "SOURCE_EXECUTOR", message="Command exited with status 0"
                )
            elif returncode < 0:
                st = status(
                    task,
                    "TASK_FAILED",
                    "SOURCE_EXECUTOR",
                    reason="REASON_COMMAND_EXECUTOR_FAILED",
                    message=f"Command terminated with signal {signal.Signals(-returncode).name}",
                )
            else:
                st = status(
                    task,
                    "TASK_FAILED",
                    "SOURCE_EXECUTOR",
                    reason="REASON_COMMAND_EXECUTOR_FAILED",
                    message=f"Command exited with status {returncode}",
                )
            st["uuid"] = new_uuid()
            st["executor_id"] = {"value": task.task_id}
            self.status_update(task, st, None)
            return
        for task in ex.live_tasks():
            self.status_update(
                task,
                status(
                    task,
                    "TASK_FAILED",
                    "SOURCE_AGENT",
                    reason=ex.reason,
                    message=f"Executor terminated (wait status {wstatus})",
                    reliable=True,
                ),
                None,
            )
        self.c._master.executor_lost(ex.framework_id, self.id, ex.executor_id, wstatus)

    def _kill_container(self, ex: Executor) -> None:
        kill_container(ex.container_id, ex.proc)

    def _shutdown(self, ex: Executor) -> None:
        """SHUTDOWN to the executor; SIGKILL to its container after the grace period."""
        if ex.state == "terminated":
            return
        if ex.state != "terminating":
            ex.state = "terminating"
            ex.kill_at = time.monotonic() + self.c.executor_shutdown_grace_period + 1.0
        if ex.stream is not None:
            ex.stream.send({"type": "SHUTDOWN"})
        else:
            self._kill_container(ex)

    def kill_task(self, task: Task, kill_policy: Any = None) -> None:
        ex = self.executors.get((task.framework_id, task.executor_id or task.task_id))
        if ex is None:
            return
        if ex.command_task is task:
            if ex.kill_requested:
                return
            ex.kill_requested = True
            grace = 3.0
            if isinstance(kill_policy, dict):
                ns = (kill_policy.get("grace_period") or {}).get("nanoseconds")
                if isinstance(ns, int):
                    grace = ns / 1e9
            if ex.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(ex.proc.pid, signal.SIGTERM)
            ex.kill_at = time.monotonic() + grace
            return
        if task in ex.queued:
            ex.queued.remove(task)
            self.status_update(
                task,
                status(
                    task,
                    "TASK_KILLED",
                    "SOURCE_AGENT",
                    reason="REASON_TASK_KILLED_DURING_LAUNCH",
                    message="Killed before delivery to the executor",
                    reliable=True,
                ),
                None,
            )
            return
        if ex.stream is not None:
            event: dict[str, Any] = {"task_id": {"value": task.task_id}}
            if kill_policy is not None:
                event["kill_policy"] = kill_policy
            ex.stream.send({"type": "KILL", "kill": event})

    def shutdown_executor(self, fid: str, eid: str) -> None:
        ex = self.executors.get((fid, eid))
        if ex is not None and ex.info is not None:
            self._shutdown(ex)

    def shutdown_framework(self, fid: str) -> None:
        for (f, _), ex in list(self.executors.items()):
            if f == fid:
                ex.silent = True
                ex.queued.clear()
                if ex.info is None:
                    self._kill_container(ex)
                else:
                    self._shutdown(ex)
        for key in [k for k in self.updates if k[0] == fid]:
            del self.updates[key]
        for key in [k for k in self.tasks if k[0] == fid]:
            del self.tasks[key]

    def message_executor(self, fid: str, eid: str, data: str) -> None:
        ex = self.executors.get((fid, eid))
        if ex is not None and ex.stream is not None:
            ex.stream.send({"type": "MESSAGE", "message": {"data": data}})

    def remove(self) -> None:
        """The agent is lost: its containers killed, no more updates from it."""
        self.active = False
        for ex in list(self.executors.values()):
            ex.silent = True
            if ex.stream is not None:
                stream, ex.stream = ex.stream, None
                stream.on_close = None
                stream.cut_now()
            self._kill_container(ex)
        self.updates.clear()
        self.tasks.clear()

    # -- the periodic part ---------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if not self.active:
            return
        retry = self.c.update_retry_interval
        for stream in list(self.updates.values()):
            if stream.pending and stream.last_sent is not None and now - stream.last_sent >= retry:
                self.c.updates_retried += 1
                self._forward(stream)
        for ex in list(self.executors.values()):
            if ex.kill_at is not None and now >= ex.kill_at and ex.state != "terminated":
                ex.kill_at = None
                self._kill_container(ex)
                continue
            if ex.info is None or ex.state == "terminating":
                continue
            if ex.state == "launching":
                if now - ex.started >= self.c.executor_registration_timeout:
                    ex.reason = "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
                    self._kill_container(ex)
                continue
            if ex.live_tasks():
                ex.idle_since = None
                continue
            if ex.idle_since is None:
                ex.idle_since = now
            idle = self.c.executor_idle_timeout
            if idle is not None and now - ex.idle_since >= idle:
                self._shutdown(ex)

    def stop(self) -> None:
        self.active = False
        for ex in list(self.executors.values()):
            ex.silent = True
            self._kill_container(ex)


def kill_container(container_id: str, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the executor's process group, its descendants, and anything carrying the
    container's marker (processes that started their own session)."""
    victims: list[psutil.Process] = []
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(psutil.Error):
            victims.extend(psutil.Process(proc.pid).children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARKER) == container_id:
                victims.append(p)
        except (psutil.Error, OSError):
            continue
    for p in victims:
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid():
                p.kill()
