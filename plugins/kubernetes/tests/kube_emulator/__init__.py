"""A strict loopback Kubernetes API server for tests, with a job controller, a scheduler and a
kubelet that runs containers as local processes.

Test infrastructure only (never imported by product code). Usage:

    emu = KubeEmulator(tmp_path)          # serving on http://127.0.0.1:PORT
    api = kubernetes.client.BatchV1Api(emu.api_client())
    ...
    emu.stop()                            # kills every container process, stops serving

Modules: `server` (HTTP, auth, counting, fault injection, chunked watches), `api` (REST
semantics: routing, selectors, pagination, patch, delete options, watch), `store` (objects,
resourceVersions, watch history), `validation` (422s and defaulting), `patch`, `scheduler`,
`controller` (Jobs, TTL, garbage collection), `kubelet` (processes; see its docstring for how
images, env, termination messages and memory limits are emulated), `util`.

One control-loop thread runs the job controller, the scheduler and the kubelet in turn, woken
by every store change, every container exit and at least every `tick_interval` seconds.
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

from . import validation
from .api import Api
from .controller import JobController
from .kubelet import Kubelet
from .scheduler import Scheduler
from .server import HttpServer
from .store import ApiError, Store
from .util import new_uid, now_rfc3339, random_token

__all__ = ["ApiError", "KubeEmulator"]

T = TypeVar("T")

SPOT_LABELS = {"eks.amazonaws.com/capacityType": "SPOT", "cloud.google.com/gke-preemptible": "true"}
SPOT_TAINT = {"key": "cloud.google.com/gke-preemptible", "value": "true", "effect": "NoSchedule"}


class KubeEmulator:
    def __init__(self, tmp_path: Path | str, nodes: list[dict[str, Any]] | None = None) -> None:
        self.root = Path(tmp_path) / "kube-emulator"
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = random_token()
        self.store = Store()
        self.bookmark_interval = 1.0
        self.tick_interval = 0.1
        self.stopping = False
        self.internal_errors: list[str] = []
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._request_log: list[str] = []
        self._fault_lock = threading.Lock()
        # Faults for the next requests: (how many, value, the verb and resource they hit; None
        # for any). A test aims them, so that a watch or relist of the backend's own in the
        # background cannot take a fault meant for the request under test.
        self._throttle: tuple[int, int, str | None, str | None] = (0, 1, None, None)
        self._fail: tuple[int, int, str | None, str | None] = (0, 500, None, None)
        self._forbidden: set[tuple[str, str]] = set()
        self._watch_lock = threading.Lock()
        self._open_watches = 0
        self._wake = threading.Event()
        self.store.listeners.append(self._wake.set)
        for ns in ("default", "jobfleet", "kube-system"):
            self.store.create(
                "namespaces",
                {
                    "metadata": {"name": ns},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        self.api = Api(self)
        self.kubelet = Kubelet(self, self.root / "pods")
        self.scheduler = Scheduler(self)
        self.controller = JobController(self)
        if nodes is None:
            self.add_node("node-a")
            self.add_node("node-b", labels=SPOT_LABELS, taints=[SPOT_TAINT])
        else:
            for spec in nodes:
                spec = dict(spec)
                self.add_node(spec.pop("name"), **spec)
        self._http = HttpServer(self)
        self.url = f"http://127.0.0.1:{self._http.port}"
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "emulator", "user": {"token": self.token}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {
                                "cluster": "emulator",
                                "user": "emulator",
                                "namespace": "default",
                            },
                        }
                    ],
                    "current-context": "emulator",
                },
                indent=2,
            )
        )
        self._loop = threading.Thread(target=self._run, name="kube-emulator-loop", daemon=True)
        self._loop.start()

    # -- the client side -----------------------------------------------------------------------
    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context="emulator")

    @property
    def enforces_memory(self) -> bool:
        return self.kubelet.enforces_memory

    # -- nodes ---------------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        *,
        cpu: str = "4",
        memory: str = "8Gi",
        ephemeral_storage: str = "50Gi",
        gpus: int = 0,
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        unschedulable: bool = False,
    ) -> dict[str, Any]:
        resources = {
            "cpu": cpu,
            "memory": memory,
            "ephemeral-storage": ephemeral_storage,
            "pods": "110",
        }
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        all_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "emulated",
        }
        all_labels.update(labels or {})
        now = now_rfc3339()
        node = {
            "metadata": {"name": name, "labels": all_labels, "annotations": {}},
            "spec": {"podCIDR": "10.244.0.0/24", "providerID": f"emulator://{name}"},
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [
                    {
                        "type": t,
                        "status": "False",
                        "reason": r,
                        "message": m,
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                    for t, r, m in (
                        (
                            "MemoryPressure",
                            "KubeletHasSufficientMemory",
                            "kubelet has sufficient memory available",
                        ),
                        (
                            "DiskPressure",
                            "KubeletHasNoDiskPressure",
                            "kubelet has no disk pressure",
                        ),
                        (
                            "PIDPressure",
                            "KubeletHasSufficientPID",
                            "kubelet has sufficient PID available",
                        ),
                    )
                ]
                + [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": new_uid(),
                    "containerRuntimeVersion": "emulator://1.0",
                    "kernelVersion": "emulated",
                    "kubeProxyVersion": "v1.33.0",
                    "kubeletVersion": "v1.33.0",
                    "machineID": new_uid().replace("-", ""),
                    "operatingSystem": "linux",
                    "osImage": "jobfleet kube emulator",
                    "systemUUID": new_uid(),
                },
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            },
        }
        if taints:
            node["spec"]["taints"] = [dict(t) for t in taints]
        if unschedulable:
            node["spec"]["unschedulable"] = True
            node["spec"].setdefault("taints", []).append(
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
            )
        return self.store.create("nodes", node)

    # -- reading the store ---------------------------------------------------------------------
    def objects(self, kind: str, namespace: str = "default") -> list[dict[str, Any]]:
        kind = kind.lower()
        if kind in ("nodes", "namespaces"):
            return copy.deepcopy(self.store.list(kind))
        return copy.deepcopy(self.store.list(kind, namespace))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30) -> T:
        """Re-evaluate predicate after every store change (and every 0.1 s) until it is true."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors = "\n".join(self.internal_errors[-3:])
                raise TimeoutError(
                    f"condition not met within {timeout} s"
                    + (f"; emulator errors:\n{errors}" if errors else "")
                )
            with self.store.changed:
                self.store.changed.wait(min(0.1, remaining))

    def all_text(self) -> str:
        """Every stored object, pod log and Event, and the request log, as one text.

        Left out, because they legitimately hold secrets: the Authorization header of requests,
        the bodies of requests to `/secrets`, and the values of Secrets' `data` (keys stay).
        """
        parts = []
        with self.store.lock:
            for resource in ("namespaces", "nodes", "jobs", "pods", "secrets", "events"):
                for obj in self.store.list(resource):
                    parts.append(json.dumps(_redact(obj), sort_keys=True))
            parts.extend(json.dumps(_redact(ev[3])) for ev in self.store.events_since(0))
        for name, log in self.kubelet.all_logs():
            parts.append(f"--- log of {name}\n{log}")
        with self._fault_lock:
            parts.extend(self._request_log)
        return "\n".join(parts)

    # -- counting ------------------------------------------------------------------------------
    def _count(self, verb: str, resource: str) -> None:
        with self._fault_lock:
            self.requests[(verb, resource)] += 1

    def request_count(self, verb: str | None = None, resource: str | None = None) -> int:
        with self._fault_lock:
            return sum(
                n
                for (v, r), n in self.requests.items()
                if (verb is None or v == verb) and (resource is None or r == resource)
            )

    def reset_counts(self) -> None:
        with self._fault_lock:
            self.requests.clear()

    def _log_request(self, method: str, path: str, headers: Any, body: bytes) -> None:
        lines = [f"{method} {path}"]
        for k, v in headers.items():
            if k.lower() != "authorization":
                lines.append(f"{k}: {v}")
        if "/secrets" in path:
            lines.append("<secret body not logged>")
        elif body:
            lines.append(body.decode(errors="replace"))
        with self._fault_lock:
            self._request_log.append("\n".join(lines))

    # -- fault injection -----------------------------------------------------------------------
    def throttle(
        self, n: int, retry_after: int = 1, verb: str | None = None, resource: str | None = None
    ) -> None:
        """Answer the next `n` requests (of `verb` on `resource` where given) with 429."""
        with self._fault_lock:
            self._throttle = (n, retry_after, verb, resource)

    def fail_next(
        self, n: int, status: int = 500, verb: str | None = None, resource: str | None = None
    ) -> None:
        """Answer the next `n` requests (of `verb` on `resource` where given) with `status`."""
        with self._fault_lock:
            self._fail = (n, status, verb, resource)

    def forbid(self, verb: str, resource: str) -> None:
        with self._fault_lock:
            self._forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        with self._fault_lock:
            self._forbidden.discard((verb, resource))

    def _inject_faults(self, verb: str, resource: str) -> None:
        with self._fault_lock:
            if (verb, resource) in self._forbidden:
                group = "batch" if resource.startswith("jobs") else ""
                res = resource.split("/")[0]
                full = f"{res}.{group}" if group else res
                sub = f"/{resource.split('/')[1]}" if "/" in resource else ""
                raise ApiError(
                    403,
                    f'{full} is forbidden: User "system:serviceaccount:default:'
                    f'jobfleet" cannot {verb} resource "{res}{sub}" in API group '
                    f'"{group}" in the namespace "default"',
                    details={"group": group, "kind": res},
                )
            n, retry_after, aim_verb, aim_resource = self._throttle
            if n > 0 and _aimed_at(verb, resource, aim_verb, aim_resource):
                self._throttle = (n - 1, retry_after, aim_verb, aim_resource)
                raise ApiError(
                    429,
                    "Too many requests, please try again later.",
                    details={
                        "causes": [{"reason": "TooManyRequests", "message": "Too many requests"}],
                        "retryAfterSeconds": retry_after,
                    },
                    headers={"Retry-After": str(retry_after)},
                )
            n, status, aim_verb, aim_resource = self._fail
            if n > 0 and _aimed_at(verb, resource, aim_verb, aim_resource):
                self._fail = (n - 1, status, aim_verb, aim_resource)
                raise ApiError(status, f"injected failure ({status})")

    # -- cluster-side actions ------------------------------------------------------------------
    def cut_watches(self, *, gone: bool = False, as_event: bool = False) -> None:
        """Close every open watch. gone=True: resuming from any resourceVersion seen so far
        answers 410 (HTTP status, or with as_event=True a 200 stream with an ERROR event)."""
        with self.store.lock:
            if gone:
                self.store.gone_as_event = as_event
                self.store.compact(bump=True)
            self.store.cut_watches()

    def compact(self) -> None:
        with self.store.lock:
            self.store.gone_as_event = False
            self.store.compact()

    def fail_image_pull(self, image: str) -> None:
        self.kubelet.failing_images.add(image)
        self.wake()

    def evict(self, pod_name: str, namespace: str = "default", reason: str = "Evicted") -> None:
        pod = self.store.get("pods", namespace, pod_name)
        if pod is None:
            raise KeyError(f"no pod {namespace}/{pod_name}")
        messages = {
            "Evicted": "The node was low on resource: memory.",
            "NodeLost": f"Node {pod['spec'].get('nodeName')} which was running pod "
            f"{pod_name} is unresponsive",
            "Preempted": "Preempted in order to admit critical pod",
        }
        self.kubelet.evict(pod, reason, messages.get(reason, reason))
        self.wake()

    def record_event(
        self, obj: dict[str, Any], type_: str, reason: str, message: str, *, component: str
    ) -> None:
        md = obj["metadata"]
        now = now_rfc3339()
        ns = md.get("namespace") or "default"
        event = {
            "metadata": {
                "name": f"{md['name']}.{new_uid().replace('-', '')[:16]}",
                "namespace": ns,
            },
            "involvedObject": {
                "kind": obj.get("kind"),
                "apiVersion": obj.get("apiVersion"),
                "namespace": ns,
                "name": md["name"],
                "uid": md.get("uid"),
                "resourceVersion": md.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": component,
        }
        self.store.create("events", event)

    # -- pods ----------------------------------------------------------------------------------
    def prepare_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """API-server defaulting of a (validated) pod, and its initial status."""
        validation.default_pod_spec(pod["spec"])
        qos = "BestEffort"
        for c in pod["spec"]["containers"]:
            res = c.get("resources") or {}
            if res.get("requests") or res.get("limits"):
                qos = "Burstable"
        guaranteed = all(
            {
                k: v
                for k, v in ((c.get("resources") or {}).get("limits") or {}).items()
                if k in ("cpu", "memory")
            }.keys()
            == {"cpu", "memory"}
            and all(
                ((c.get("resources") or {}).get("requests") or {}).get(k)
                == c["resources"]["limits"][k]
                for k in ("cpu", "memory")
            )
            for c in pod["spec"]["containers"]
        )
        if guaranteed:
            qos = "Guaranteed"
        pod["status"] = {"phase": "Pending", "qosClass": qos}
        return pod

    def prepare_pod_and_create(
        self, pod: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        pod = self.prepare_pod(pod)
        if dry_run:
            return pod
        return self.store.create("pods", pod)

    # -- the control loop ----------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping:
            self._wake.wait(self.tick_interval)
            if self.stopping:
                break
            time.sleep(0.005)  # let a burst of writes land together
            self._wake.clear()
            for step in (self.controller.tick, self.scheduler.tick, self.kubelet.tick):
                try:
                    step()
                except Exception:
                    self.internal_errors.append(traceback.format_exc())

    def stop(self) -> None:
        """Kill every container process and stop serving."""
        if self.stopping:
            return
        self.stopping = True
        self._wake.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._loop.join(timeout=10)
        self.kubelet.stop()
        with contextlib.suppress(Exception):
            self._http.stop()

    def __enter__(self) -> KubeEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redact(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    out["data"] = dict.fromkeys(obj.get("data") or {}, "<redacted>")
    return out


def _aimed_at(verb: str, resource: str, aim_verb: str | None, aim_resource: str | None) -> bool:
    return (aim_verb is None or aim_verb == verb) and (
        aim_resource is None or aim_resource == resource
    )
