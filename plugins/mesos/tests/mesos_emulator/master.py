"""The master: the v1 scheduler API (`POST /api/v1/scheduler`), frameworks, offers and their
filters, launch validation, kills, acknowledgements, reconciliation, failover and heartbeats.

All state is guarded by the cluster's one lock; events go to each subscriber's bounded stream.
Master-generated status updates carry no uuid (they need no acknowledgement); agent-generated
ones do, and are retried by the agent until acknowledged (see agent.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import resources as rs
from .http import HttpError, HttpServer, Response, Stream, StreamResponse, parse_json
from .state import Filter, Framework, Offer, Task, new_uuid, status, uuid_bytes

if TYPE_CHECKING:
    from . import MesosCluster
    from .agent import Agent

VERSION = "1.11.0"
DEFAULT_REFUSE_SECONDS = 5.0
MIN_CPUS = 0.01
MIN_MEM = 32.0
ID_RE = re.compile(r"^[^/\\\s]+$")

CALLS_NEEDING = {
    "ACCEPT": "accept",
    "DECLINE": "decline",
    "KILL": "kill",
    "SHUTDOWN": "shutdown",
    "ACKNOWLEDGE": "acknowledge",
    "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
    "RECONCILE": "reconcile",
    "RECONCILE_OPERATIONS": "reconcile_operations",
    "MESSAGE": "message",
    "REQUEST": "request",
    "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
    "DECLINE_INVERSE_OFFERS": "decline_inverse_offers",
    "UPDATE_FRAMEWORK": "update_framework",
}
CALLS_PLAIN = {"TEARDOWN", "REVIVE", "SUPPRESS"}


def _id(obj: Any, what: str) -> str:
    """The `value` of a required `{"value": ...}` id (400 when missing: a required proto field)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("value"), str):
        raise HttpError(400, f"Failed to convert JSON into Call protobuf: missing '{what}'")
    return obj["value"]


def _validate_role(role: Any) -> None:
    if not isinstance(role, str) or not role:
        raise HttpError(400, "Role name must not be empty")
    if role == "*":
        return
    if role in (".", "..") or role.startswith("-") or any(c in role for c in "/\\ \t\n"):
        raise HttpError(400, f"Invalid role name '{role}'")


class Master:
    def __init__(self, cluster: MesosCluster) -> None:
        self.c = cluster
        self.id = str(uuid.uuid4())
        self.frameworks: dict[str, Framework] = {}
        self.removed_frameworks: dict[str, Framework] = {}
        self.offers: dict[str, Offer] = {}
        self.removed_agents: dict[str, bool] = {}  # agent id → removed as unreachable
        self._next_framework = 0
        self._next_offer = 0
        self._next_stream = 0
        self._rr = 0
        self.internal_errors = cluster.internal_errors
        self.server = HttpServer(self, "master")

    @property
    def stopping(self) -> bool:
        return self.c.stopping

    # -- HTTP ----------------------------------------------------------------------------------
    def log_request(self, method: str, path: str, headers: Any, body: bytes) -> None:
        self.c._log_request("master", method, path, headers, body)

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> Response | StreamResponse:
        route = urlsplit(path).path.rstrip("/")
        if route in ("/version", "/master/version"):
            if method != "GET":
                raise HttpError(405, "Expecting 'GET'", {"Allow": "GET"})
            return Response(200, {"version": VERSION, "build_user": "emulator", "git_tag": VERSION})
        if route in ("/api/v1/scheduler", "/master/api/v1/scheduler"):
            if method != "POST":
                raise HttpError(405, f"Expecting a 'POST' request, received '{method}'")
            principal = self._authenticate(headers)
            accept = headers.get("Accept")
            if accept and not any(
                a.split(";")[0].strip() in ("application/json", "*/*", "application/*")
                for a in accept.split(",")
            ):
                raise HttpError(406, "Expecting 'Accept' to allow application/json")
            call = parse_json(body, headers.get("Content-Type"))
            ctype = call.get("type")
            if not isinstance(ctype, str):
                raise HttpError(400, "Failed to validate scheduler::Call: Expecting 'type'")
            with self.c.lock:
                self.c.calls[ctype] += 1
            if ctype == "SUBSCRIBE":
                return self._subscribe(call, principal)
            self._call(ctype, call, headers, principal)
            return Response(202)
        raise HttpError(404, "Not Found")

    def _authenticate(self, headers: Any) -> str | None:
        auth = self.c._auth
        if auth is None:
            return None
        principal, secret = auth
        challenge = {"WWW-Authenticate": 'Basic realm="mesos"'}
        header = headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            raise HttpError(401, "Unauthorized", challenge)
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise HttpError(401, "Unauthorized", challenge) from None
        user, _, password = decoded.partition(":")
        ok_user = hmac.compare_digest(user.encode(), principal.encode())
        ok_secret = hmac.compare_digest(password.encode(), secret.encode())
        if not (ok_user and ok_secret):
            raise HttpError(401, "Unauthorized", challenge)
        return principal

    # -- SUBSCRIBE -----------------------------------------------------------------------------
    def _subscribe(self, call: dict[str, Any], principal: str | None) -> StreamResponse:
        sub = call.get("subscribe")
        if not isinstance(sub, dict):
            raise HttpError(400, "Expecting 'subscribe' to be present")
        info = sub.get("framework_info")
        if not isinstance(info, dict):
            raise HttpError(400, "Expecting 'subscribe.framework_info' to be present")
        for key in ("user", "name"):
            if not isinstance(info.get(key), str):
                raise HttpError(
                    400,
                    "Failed to convert JSON into Call protobuf: Missing required fields: "
                    f"subscribe.framework_info.{key}",
                )
        fid = None
        if "framework_id" in call:
            fid = _id(call["framework_id"], "framework_id")
        if "id" in info:
            info_id = _id(info["id"], "subscribe.framework_info.id")
            if fid is not None and fid != info_id:
                raise HttpError(400, "'framework_id' differs from 'subscribe.framework_info.id'")
            fid = info_id
        caps = [c.get("type") for c in info.get("capabilities") or [] if isinstance(c, dict)]
        if "MULTI_ROLE" in caps:
            if "role" in info:
                raise HttpError(400, "'FrameworkInfo.role' must not be set for MULTI_ROLE")
            roles = info.get("roles") or []
            if not isinstance(roles, list):
                raise HttpError(400, "'FrameworkInfo.roles' must be a list")
            for r in roles:
                _validate_role(r)
        else:
            if info.get("roles"):
                raise HttpError(400, "'FrameworkInfo.roles' needs the MULTI_ROLE capability")
            _validate_role(info.get("role", "*"))
        ft = info.get("failover_timeout", 0.0)
        if not isinstance(ft, int | float) or ft < 0:
            raise HttpError(400, "Invalid 'failover_timeout'")
        if principal is not None and info.get("principal") not in (None, principal):
            raise HttpError(403, "Framework principal does not match the authenticated principal")

        with self.c.lock:
            self._next_stream += 1
            stream = Stream(str(uuid.uuid4()))
            if fid is not None and fid in self.removed_frameworks:
                stream.send({"type": "ERROR", "error": {"message": "Framework has been removed"}})
                stream.finish()
                return StreamResponse(stream)
            now = time.monotonic()
            if fid is not None and fid in self.frameworks:
                fw = self.frameworks[fid]
                old = fw.stream
                if old is not None:
                    old.send({"type": "ERROR", "error": {"message": "Framework failed over"}})
                    old.finish()
                self._drop_offers(fw)
                fw.info = dict(info, id={"value": fid})
                fw.principal = principal
            else:
                if fid is None:
                    fid = f"{self.id}-{self._next_framework:04d}"
                    self._next_framework += 1
                fw = Framework(fid, dict(info, id={"value": fid}), principal)
                self.frameworks[fid] = fw
            suppressed = sub.get("suppressed_roles") or []
            fw.suppressed = bool(suppressed) and set(fw.roles) <= set(suppressed)
            fw.stream = stream
            fw.disconnected_at = None
            fw.last_heartbeat = now
            stream.on_close = self._stream_closed
            stream.send(
                {
                    "type": "SUBSCRIBED",
                    "subscribed": {
                        "framework_id": {"value": fid},
                        "heartbeat_interval_seconds": float(self.c.heartbeat_interval),
                        "master_info": self.master_info(),
                    },
                }
            )
            self.c.wake()
        return StreamResponse(stream)

    def master_info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ip": 0x0100007F,
            "port": self.server.port,
            "hostname": "127.0.0.1",
            "version": VERSION,
            "address": {"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": self.server.port},
        }

    def _stream_closed(self, stream: Stream) -> None:
        with self.c.lock:
            for fw in self.frameworks.values():
                if fw.stream is stream:
                    fw.stream = None
                    fw.disconnected_at = time.monotonic()
                    self._drop_offers(fw)
                    if fw.failover_timeout <= 0:
                        self.remove_framework(fw, "failover timeout 0")
                    break
            self.c.wake()

    # -- other calls ---------------------------------------------------------------------------
    def _call(self, ctype: str, call: dict[str, Any], headers: Any, principal: str | None) -> None:
        if ctype in CALLS_NEEDING:
            if not isinstance(call.get(CALLS_NEEDING[ctype]), dict):
                raise HttpError(400, f"Expecting '{CALLS_NEEDING[ctype]}' to be present")
        elif ctype not in CALLS_PLAIN:
            raise HttpError(400, f"Failed to validate scheduler::Call: Unknown call type {ctype}")
        if "framework_id" not in call:
            raise HttpError(400, "Expecting 'framework_id' to be present")
        fid = _id(call["framework_id"], "framework_id")
        stream_id = headers.get("Mesos-Stream-Id")
        if not stream_id:
            raise HttpError(
                400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
            )
        with self.c.lock:
            fw = self.frameworks.get(fid)
            if fw is None:
                raise HttpError(400, "Framework cannot be found")
            if principal is not None and fw.principal not in (None, principal):
                raise HttpError(403, "Authenticated principal does not match the framework's")
            if fw.stream is None:
                raise HttpError(403, "Framework is not subscribed")
            if stream_id != fw.stream.stream_id:
                raise HttpError(
                    400,
                    f"The stream ID '{stream_id}' included in this request didn't match the "
                    f"stream ID currently associated with framework ID {fid}",
                )
            handler = getattr(self, f"_call_{ctype.lower()}", None)
            if handler is not None:
                handler(fw, call.get(CALLS_NEEDING.get(ctype, ""), {}))
            self.c.wake()

    def _call_teardown(self, fw: Framework, _: Any) -> None:
        self.remove_framework(fw, "TEARDOWN")

    def _call_suppress(self, fw: Framework, _: Any) -> None:
        fw.suppressed = True

    def _call_revive(self, fw: Framework, _: Any) -> None:
        fw.suppressed = False
        fw.filters.clear()

    def _offer_ids(self, body: dict[str, Any], key: str = "offer_ids") -> list[str]:
        ids = body.get(key)
        if not isinstance(ids, list):
            raise HttpError(400, f"Expecting '{key}' to be a list")
        return [_id(o, key) for o in ids]

    @staticmethod
    def _refuse_seconds(filters: Any) -> float:
        if filters is None:
            return DEFAULT_REFUSE_SECONDS
        if not isinstance(filters, dict):
            raise HttpError(400, "'filters' must be an object")
        value = filters.get("refuse_seconds", DEFAULT_REFUSE_SECONDS)
        if not isinstance(value, int | float):
            raise HttpError(400, "'filters.refuse_seconds' must be a number")
        return float(value)

    def _add_filter(self, fw: Framework, agent_id: str, res: dict[str, float], secs: float) -> None:
        if secs <= 0 or rs.is_empty(res):
            return
        expires = time.monotonic() + secs
        old = fw.filters.get(agent_id)
        if old is not None and old.expires > time.monotonic():
            res = rs.add(res, old.resources)
            expires = max(expires, old.expires)
        fw.filters[agent_id] = Filter(expires, res)

    def _call_decline(self, fw: Framework, body: dict[str, Any]) -> None:
        ids = self._offer_ids(body)
        secs = self._refuse_seconds(body.get("filters"))
        for oid in ids:
            offer = self.offers.get(oid)
            if offer is None or offer.framework_id != fw.id:
                continue  # the real master logs and ignores these
            del self.offers[oid]
            self.c.offers_declined += 1
            self._add_filter(fw, offer.agent_id, offer.resources, secs)

    def _call_accept(self, fw: Framework, body: dict[str, Any]) -> None:
        ids = self._offer_ids(body)
        operations = body.get("operations")
        if not isinstance(operations, list):
            raise HttpError(400, "Expecting 'accept.operations' to be a list")
        launches: list[dict[str, Any]] = []
        for op in operations:
            if not isinstance(op, dict) or not isinstance(op.get("type"), str):
                raise HttpError(400, "An Offer.Operation needs a 'type'")
            if op["type"] == "LAUNCH":
                launch = op.get("launch")
                if not isinstance(launch, dict) or not isinstance(launch.get("task_infos"), list):
                    raise HttpError(400, "Expecting 'launch.task_infos'")
                for ti in launch["task_infos"]:
                    self._check_task_proto(ti)
                    launches.append(ti)
            elif op["type"] == "LAUNCH_GROUP":
                raise HttpError(400, "LAUNCH_GROUP is not emulated")
        filters = body.get("filters")
        secs = self._refuse_seconds(filters) if filters is not None else 0.0

        # Offers: all valid, this framework's, one agent. Valid ones are used up either way.
        error = None
        offers: list[Offer] = []
        if not ids:
            error = "No offers specified"
        if len(set(ids)) != len(ids):
            error = "Duplicate offers in one ACCEPT"
        for oid in dict.fromkeys(ids):
            offer = self.offers.get(oid)
            if offer is None:
                error = error or f"Offer {oid} is no longer valid"
                continue
            if offer.framework_id != fw.id:
                error = error or f"Offer {oid} has invalid framework"
                continue
            offers.append(offer)
        if error is None and len({o.agent_id for o in offers}) > 1:
            error = "Aggregated offers must belong to one single agent"
        for offer in offers:
            if error is None or offer.framework_id == fw.id:
                self.offers.pop(offer.id, None)
        if error is not None:
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for ti in launches:
                self._send_update(
                    fw,
                    {
                        "task_id": {"value": ti["task_id"]["value"]},
                        "state": state,
                        "source": "SOURCE_MASTER",
                        "reason": "REASON_INVALID_OFFERS",
                        "message": error,
                        "agent_id": ti["agent_id"],
                        "timestamp": time.time(),
                    },
                )
            return

        agent_id = offers[0].agent_id
        agent = self.c._agents[agent_id]
        available = rs.empty()
        for o in offers:
            available = rs.add(available, o.resources)
        seen: set[str] = set()
        new_executors: dict[str, dict[str, Any]] = {}
        for ti in launches:
            task_id = ti["task_id"]["value"]
            err, res, executor = self._validate_task(fw, agent, ti, seen, new_executors)
            if err is None and not rs.contains(available, res):
                err = f"Task uses more resources {_fmt(res)} than available {_fmt(available)}"
            if err is not None:
                st = {
                    "task_id": {"value": task_id},
                    "state": "TASK_ERROR",
                    "source": "SOURCE_MASTER",
                    "reason": "REASON_TASK_INVALID",
                    "message": err,
                    "agent_id": {"value": agent_id},
                    "timestamp": time.time(),
                }
                self._send_update(fw, st)
                continue
            seen.add(task_id)
            available = rs.sub(available, res)
            eid = None if executor is None else executor["executor_id"]["value"]
            if eid is not None and eid not in new_executors and not agent.has_executor(fw.id, eid):
                new_executors[eid] = executor
            task = Task(
                task_id=task_id,
                framework_id=fw.id,
                agent_id=agent_id,
                executor_id=eid if eid is not None else task_id,
                info=ti,
                resources=rs.parse(ti.get("resources"), set(fw.roles)),
                command_task=executor is None,
            )
            fw.tasks[task_id] = task
            agent.launch(fw, task, executor)
        self._add_filter(fw, agent_id, available, secs)

    def _check_task_proto(self, ti: Any) -> None:
        """Fields the TaskInfo proto requires: the real master rejects the whole call (400)."""
        if not isinstance(ti, dict):
            raise HttpError(400, "A TaskInfo must be an object")
        missing = [
            k
            for k, ok in (
                ("name", isinstance(ti.get("name"), str)),
                ("task_id", isinstance((ti.get("task_id") or {}).get("value"), str)),
                ("agent_id", isinstance((ti.get("agent_id") or {}).get("value"), str)),
            )
            if not ok
        ]
        ex = ti.get("executor")
        if ex is not None and not (
            isinstance(ex, dict) and isinstance((ex.get("executor_id") or {}).get("value"), str)
        ):
            missing.append("executor.executor_id")
        for res in (ti.get("resources") or []) + ((ex or {}).get("resources") or []):
            if not isinstance(res, dict) or "name" not in res or "type" not in res:
                missing.append("resources[].name/type")
        if missing:
            raise HttpError(
                400,
                "Failed to convert JSON into Call protobuf: Missing required fields: "
                + ", ".join(f"accept.operations.launch.task_infos.{m}" for m in missing),
            )

    def _validate_task(
        self,
        fw: Framework,
        agent: Agent,
        ti: dict[str, Any],
        seen: set[str],
        new_executors: dict[str, dict[str, Any]],
    ) -> tuple[str | None, dict[str, float], dict[str, Any] | None]:
        task_id = ti["task_id"]["value"]
        none = rs.empty()
        if not ID_RE.match(task_id) or task_id in (".", ".."):
            return f"Invalid task ID '{task_id}'", none, None
        if task_id in seen or task_id in fw.tasks:
            return f"Task has duplicate ID: {task_id}", none, None
        if ti["agent_id"]["value"] != agent.id:
            return f"Task uses invalid agent ID: '{ti['agent_id']['value']}'", none, None
        command, executor = ti.get("command"), ti.get("executor")
        if (command is None) == (executor is None):
            return (
                "Task should have at least one (but not both) of CommandInfo or "
                "ExecutorInfo present",
                none,
                None,
            )
        try:
            res = rs.parse(ti.get("resources"), set(fw.roles))
            if rs.is_empty(res):
                return "Task uses no resources", none, None
            total = res
            if command is not None:
                err = _validate_command(command, "Task's CommandInfo")
                if err:
                    return err, none, None
                return None, total, None
            assert isinstance(executor, dict)
            eid = executor["executor_id"]["value"]
            if not ID_RE.match(eid):
                return f"Invalid executor ID '{eid}'", none, None
            if "framework_id" in executor and executor["framework_id"] != {"value": fw.id}:
                return "ExecutorInfo has an invalid FrameworkID", none, None
            if executor.get("type", "CUSTOM") != "CUSTOM":
                return f"Executor type {executor.get('type')} is not emulated", none, None
            if not isinstance(executor.get("command"), dict):
                return f"Executor '{eid}' of type CUSTOM must have a command", none, None
            err = _validate_command(executor["command"], "ExecutorInfo's CommandInfo")
            if err:
                return err, none, None
            running = agent.executor_info(fw.id, eid) or new_executors.get(eid)
            if running is not None:
                if _executor_key(running) != _executor_key(executor):
                    return (
                        f"ExecutorInfo is not compatible with the running executor '{eid}'",
                        none,
                        None,
                    )
            else:
                total = rs.add(res, rs.parse(executor.get("resources"), set(fw.roles)))
        except rs.ResourceError as e:
            return f"Invalid resources: {e}", none, None
        return None, total, executor

    def _call_kill(self, fw: Framework, body: dict[str, Any]) -> None:
        task_id = _id(body.get("task_id"), "kill.task_id")
        agent_id = _id(body["agent_id"], "kill.agent_id") if "agent_id" in body else None
        task = fw.tasks.get(task_id)
        if task is None:
            self._reconcile_one(fw, task_id, agent_id)
            return
        if task.terminal:
            return
        self.c._agents[task.agent_id].kill_task(task, body.get("kill_policy"))

    def _call_shutdown(self, fw: Framework, body: dict[str, Any]) -> None:
        eid = _id(body.get("executor_id"), "shutdown.executor_id")
        aid = _id(body.get("agent_id"), "shutdown.agent_id")
        agent = self.c._agents.get(aid)
        if agent is not None and agent.active:
            agent.shutdown_executor(fw.id, eid)

    def _call_acknowledge(self, fw: Framework, body: dict[str, Any]) -> None:
        aid = _id(body.get("agent_id"), "acknowledge.agent_id")
        tid = _id(body.get("task_id"), "acknowledge.task_id")
        raw = uuid_bytes(body.get("uuid"))
        if raw is None:
            raise HttpError(400, "Failed to validate scheduler::Call: invalid 'acknowledge.uuid'")
        agent = self.c._agents.get(aid)
        if agent is not None and agent.active:
            agent.acknowledge(fw.id, tid, raw)

    def _call_reconcile(self, fw: Framework, body: dict[str, Any]) -> None:
        tasks = body.get("tasks") or []
        if not isinstance(tasks, list):
            raise HttpError(400, "Expecting 'reconcile.tasks' to be a list")
        parsed = []
        for t in tasks:
            if not isinstance(t, dict):
                raise HttpError(400, "reconcile.tasks[] must be objects")
            tid = _id(t.get("task_id"), "reconcile.tasks.task_id")
            aid = _id(t["agent_id"], "reconcile.tasks.agent_id") if "agent_id" in t else None
            parsed.append((tid, aid))
        if not parsed:
            for task in list(fw.tasks.values()):
                self._reconcile_one(fw, task.task_id, None)
            return
        for tid, aid in parsed:
            self._reconcile_one(fw, tid, aid)

    def _reconcile_one(self, fw: Framework, task_id: str, agent_id: str | None) -> None:
        task = fw.tasks.get(task_id)
        st: dict[str, Any] = {
            "task_id": {"value": task_id},
            "source": "SOURCE_MASTER",
            "reason": "REASON_RECONCILIATION",
            "timestamp": time.time(),
        }
        if task is not None:
            st["state"] = task.state
            st["agent_id"] = {"value": task.agent_id}
            st["message"] = "Reconciliation: Latest task state"
            if not task.command_task and task.executor_id:
                st["executor_id"] = {"value": task.executor_id}
        else:
            pa = fw.partition_aware
            if agent_id is not None:
                st["agent_id"] = {"value": agent_id}
            if (
                agent_id is not None
                and agent_id in self.c._agents
                and agent_id not in self.removed_agents
            ):
                st["state"] = "TASK_GONE" if pa else "TASK_LOST"
                st["message"] = "Reconciliation: Task is unknown to the agent"
            elif agent_id is not None and self.removed_agents.get(agent_id):
                st["state"] = "TASK_UNREACHABLE" if pa else "TASK_LOST"
                st["message"] = "Reconciliation: Task is unreachable"
            elif agent_id is not None and agent_id in self.removed_agents:
                st["state"] = "TASK_GONE_BY_OPERATOR" if pa else "TASK_LOST"
                st["message"] = "Reconciliation: Task is gone"
            else:
                st["state"] = "TASK_UNKNOWN" if pa else "TASK_LOST"
                st["message"] = "Reconciliation: Task is unknown"
        self._send_update(fw, st)

    def _call_message(self, fw: Framework, body: dict[str, Any]) -> None:
        aid = _id(body.get("agent_id"), "message.agent_id")
        eid = _id(body.get("executor_id"), "message.executor_id")
        data = body.get("data")
        if not isinstance(data, str):
            raise HttpError(400, "Expecting 'message.data' (base64)")
        agent = self.c._agents.get(aid)
        if agent is not None and agent.active:
            agent.message_executor(fw.id, eid, data)

    # -- events to frameworks ------------------------------------------------------------------
    def _send(self, fw: Framework, event: dict[str, Any]) -> bool:
        if fw.stream is None:
            return False
        return fw.stream.send(event)

    def _send_update(self, fw: Framework, st: dict[str, Any]) -> bool:
        return self._send(fw, {"type": "UPDATE", "update": {"status": st}})

    def forward_update(self, framework_id: str, st: dict[str, Any]) -> bool:
        """An agent's (reliable) status update, forwarded when the framework is connected."""
        fw = self.frameworks.get(framework_id)
        if fw is None:
            return False
        self.c.updates_forwarded += 1
        return self._send_update(fw, st)

    def master_update(self, task: Task, state: str, reason: str, message: str) -> None:
        """A master-generated terminal update (no uuid): sent once, and the task completes."""
        fw = self.frameworks.get(task.framework_id)
        st = status(task, state, "SOURCE_MASTER", reason=reason, message=message)
        self.task_state(task, st)
        if fw is not None:
            self._send_update(fw, st)
        self.task_completed(task)

    def task_state(self, task: Task, st: dict[str, Any]) -> None:
        task.state = st["state"]
        task.statuses.append(st)

    def task_completed(self, task: Task) -> None:
        if task.completed:
            return
        task.completed = True
        fw = self.frameworks.get(task.framework_id) or self.removed_frameworks.get(
            task.framework_id
        )
        if fw is not None and fw.tasks.get(task.task_id) is task:
            del fw.tasks[task.task_id]
            fw.completed.append(task)

    def framework_message(self, framework_id: str, agent_id: str, eid: str, data: str) -> None:
        fw = self.frameworks.get(framework_id)
        if fw is not None:
            self._send(
                fw,
                {
                    "type": "MESSAGE",
                    "message": {
                        "agent_id": {"value": agent_id},
                        "executor_id": {"value": eid},
                        "data": data,
                    },
                },
            )

    def executor_lost(self, framework_id: str, agent_id: str, eid: str, wstatus: int) -> None:
        fw = self.frameworks.get(framework_id)
        if fw is not None:
            self._send(
                fw,
                {
                    "type": "FAILURE",
                    "failure": {
                        "agent_id": {"value": agent_id},
                        "executor_id": {"value": eid},
                        "status": wstatus,
                    },
                },
            )

    # -- frameworks ----------------------------------------------------------------------------
    def remove_framework(self, fw: Framework, why: str) -> None:
        """TEARDOWN or failover timeout: its executors shut down, its tasks killed, its offers
        gone; later subscriptions with its id get an ERROR."""
        if fw.removed:
            return
        fw.removed = True
        self._drop_offers(fw)
        for agent in self.c._agents.values():
            agent.shutdown_framework(fw.id)
        for task in list(fw.tasks.values()):
            if not task.terminal:
                self.task_state(
                    task,
                    status(
                        task,
                        "TASK_KILLED",
                        "SOURCE_MASTER",
                        reason="REASON_FRAMEWORK_REMOVED",
                        message=f"Framework removed ({why})",
                    ),
                )
            self.task_completed(task)
        del self.frameworks[fw.id]
        self.removed_frameworks[fw.id] = fw
        if fw.stream is not None:
            stream, fw.stream = fw.stream, None
            stream.finish()

    # -- offers --------------------------------------------------------------------------------
    def _drop_offers(self, fw: Framework) -> None:
        for oid in [o.id for o in self.offers.values() if o.framework_id == fw.id]:
            del self.offers[oid]

    def rescind(self, offer: Offer) -> None:
        self.offers.pop(offer.id, None)
        self.c.offers_rescinded += 1
        fw = self.frameworks.get(offer.framework_id)
        if fw is not None:
            self._send(fw, {"type": "RESCIND", "rescind": {"offer_id": {"value": offer.id}}})

    def offered(self, agent_id: str) -> dict[str, float]:
        total = rs.empty()
        for o in self.offers.values():
            if o.agent_id == agent_id:
                total = rs.add(total, o.resources)
        return total

    def agent_removed(self, agent: Agent, unreachable: bool) -> None:
        self.removed_agents[agent.id] = unreachable
        for offer in [o for o in self.offers.values() if o.agent_id == agent.id]:
            self.rescind(offer)
        for fw in self.frameworks.values():
            for task in [t for t in fw.tasks.values() if t.agent_id == agent.id]:
                if task.terminal:
                    # Its terminal update was never acknowledged: deliver it a last time.
                    if task.statuses:
                        self._send_update(fw, task.statuses[-1])
                    self.task_completed(task)
                    continue
                if unreachable:
                    state = "TASK_UNREACHABLE" if fw.partition_aware else "TASK_LOST"
                    reason = "REASON_AGENT_UNREACHABLE"
                else:
                    state = "TASK_GONE" if fw.partition_aware else "TASK_LOST"
                    reason = "REASON_AGENT_REMOVED"
                self.master_update(task, state, reason, f"Agent {agent.hostname} removed")
            for flt_agent in [a for a in fw.filters if a == agent.id]:
                del fw.filters[flt_agent]
        for fw in self.frameworks.values():
            self._send(fw, {"type": "FAILURE", "failure": {"agent_id": {"value": agent.id}}})

    # -- the periodic part ---------------------------------------------------------------------
    def tick(self, now: float) -> None:
        timeout = self.c.offer_timeout
        if timeout is not None:
            for offer in [o for o in self.offers.values() if now - o.created >= timeout]:
                self.rescind(offer)
        for fw in list(self.frameworks.values()):
            if fw.stream is None:
                if fw.disconnected_at is not None and (
                    now - fw.disconnected_at >= fw.failover_timeout
                ):
                    self.remove_framework(fw, "failover timeout")
                continue
            if now - fw.last_heartbeat >= self.c.heartbeat_interval:
                fw.last_heartbeat = now
                self._send(fw, {"type": "HEARTBEAT"})
            for aid in [a for a, f in fw.filters.items() if f.expires <= now]:
                del fw.filters[aid]
        self.allocate(now)

    def allocate(self, now: float) -> None:
        frameworks = [
            fw for fw in self.frameworks.values() if fw.stream is not None and not fw.suppressed
        ]
        if not frameworks:
            return
        batches: dict[str, list[dict[str, Any]]] = {}
        for agent in sorted(self.c._agents.values(), key=lambda a: a.id):
            if not agent.active:
                continue
            avail = rs.sub(rs.sub(agent.total, agent.used()), self.offered(agent.id))
            if avail["cpus"] < MIN_CPUS and avail["mem"] < MIN_MEM:
                continue
            n = len(frameworks)
            for i in range(n):
                fw = frameworks[(self._rr + i) % n]
                if agent.total.get("gpus", 0) > 0 and "GPU_RESOURCES" not in fw.capabilities:
                    continue
                flt = fw.filters.get(agent.id)
                if flt is not None and flt.expires > now and rs.contains(flt.resources, avail):
                    continue
                self._rr = (self._rr + i + 1) % n
                self._next_offer += 1
                offer = Offer(f"{self.id}-O{self._next_offer}", fw.id, agent.id, avail, now)
                self.offers[offer.id] = offer
                self.c.offers_sent += 1
                batches.setdefault(fw.id, []).append(self._offer_json(offer, fw, agent))
                break
        for fid, offers in batches.items():
            self._send(self.frameworks[fid], {"type": "OFFERS", "offers": {"offers": offers}})

    def _offer_json(self, offer: Offer, fw: Framework, agent: Agent) -> dict[str, Any]:
        return {
            "id": {"value": offer.id},
            "framework_id": {"value": fw.id},
            "agent_id": {"value": agent.id},
            "hostname": agent.hostname,
            "url": {
                "scheme": "http",
                "address": {"hostname": agent.hostname, "ip": "127.0.0.1", "port": agent.port},
                "path": "/slave(1)",
            },
            "resources": rs.to_json(offer.resources, fw.role),
            "attributes": rs.attributes_json(agent.attributes),
            "allocation_info": {"role": fw.role},
        }


def _fmt(r: dict[str, float]) -> str:
    return "; ".join(f"{n}:{r[n]:g}" for n in rs.NAMES if r.get(n))


def _validate_command(command: Any, what: str) -> str | None:
    if not isinstance(command, dict):
        return f"{what} must be an object"
    shell = command.get("shell", True)
    if not isinstance(shell, bool):
        return f"{what}: 'shell' must be a boolean"
    if not isinstance(command.get("value"), str) or not command["value"]:
        return f"{what}: 'value' is required"
    args = command.get("arguments", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return f"{what}: 'arguments' must be a list of strings"
    env = command.get("environment")
    if env is not None:
        variables = env.get("variables") if isinstance(env, dict) else None
        if not isinstance(variables, list):
            return f"{what}: 'environment.variables' must be a list"
        for v in variables:
            if not isinstance(v, dict) or not isinstance(v.get("name"), str):
                return f"{what}: an environment variable needs a 'name'"
            if v.get("type", "VALUE") != "VALUE" or not isinstance(v.get("value"), str):
                return f"{what}: environment variable '{v['name']}' needs a string 'value'"
    return None


def _executor_key(executor: dict[str, Any]) -> Any:
    return (executor["executor_id"]["value"], repr(executor.get("command")))


# Used by the agent for its own status updates.
__all__ = ["VERSION", "Master", "new_uuid"]
