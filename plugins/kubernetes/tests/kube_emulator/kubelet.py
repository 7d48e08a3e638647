"""The kubelet: runs each scheduled pod's container as a local process.

Images are never pulled: an image name is only checked for reference syntax (an invalid one
leaves the container waiting in `InvalidImageName`), and images named by
`KubeEmulator.fail_image_pull` wait in `ErrImagePull`, then `ImagePullBackOff`, alternately,
never starting. The container runs `command + args` (there is no image entrypoint, so a
container without `command` ends in `StartError`) through `subprocess.Popen` in its own session,
with a per-pod directory as working directory, stdout and stderr both appended to the pod's log
file, and an environment of: the emulator's own PATH (so `jobfleet-worker-node` is found),
`HOSTNAME`, `HOME` (the pod directory), then the container's `env` in order — `value` (with
`$(VAR)` references expanded as Kubernetes does), `valueFrom.secretKeyRef` (a missing Secret or
key leaves the container waiting in `CreateContainerConfigError`, retried until it appears),
`valueFrom.fieldRef` (`metadata.name`, `metadata.namespace`, `metadata.uid`,
`metadata.labels['…']`, `metadata.annotations['…']`, `spec.nodeName`, `status.hostIP`,
`status.podIP`); Indexed Job pods get `JOB_COMPLETION_INDEX` this way, as on a real cluster.

Termination message: there is no container file system, so each container gets a private file
standing for its `terminationMessagePath` (default `/dev/termination-log`), and every env
variable whose value is exactly that path is rewritten to the private file's path — a program
that writes to "the path in $X" works unchanged. After exit, up to 4096 bytes of that file become
`state.terminated.message`; with `terminationMessagePolicy: FallbackToLogsOnError` an empty file
of a failed container falls back to the log's last 80 lines (at most 2048 bytes).

Memory: where the cgroup v1 memory controller is writable (`/sys/fs/cgroup/memory`), each
container runs in its own cgroup with `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`
when present) from `resources.limits.memory`; an OOM kill (`oom_kill` in `memory.oom_control`,
or SIGKILL while the cgroup hit its limit) terminates the container with `OOMKilled`, exit code
137. The cgroup is removed afterwards. Without it, limits are not enforced
(`KubeEmulator.enforces_memory` is False).

Exit: a process killed by signal N terminates with exit code 128+N; exit 0 is `Completed`,
anything else `Error`. When the main process ends, the rest of its process group is killed (a
container ends with its main process). Pod `activeDeadlineSeconds` kills the container and fails
the pod with `reason: DeadlineExceeded` (the container itself ends `Error`, as on a real node).
Deletion: `deletionTimestamp` is set, SIGTERM goes to the process group, SIGKILL after the grace
period, and the object is removed once the process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .util import now_rfc3339, parse_quantity, parse_time

if TYPE_CHECKING:
    from . import KubeEmulator

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
TERMINAL = ("Succeeded", "Failed")
_IMAGE_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*"
    r"[a-zA-Z0-9])?))*(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
_FIELD_RE = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def cgroup_v1_memory_writable() -> bool:
    probe = CGROUP_ROOT / f"jobfleet-emu-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        return (probe / "memory.limit_in_bytes").exists()
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@dataclass
class Container:
    pod_uid: str
    namespace: str
    name: str
    directory: Path
    log_path: Path
    message_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cgroup: Path | None = None
    limit: int | None = None
    started: float = 0.0
    term_sent: float | None = None
    kill_at: float | None = None
    kill_reason: str | None = None  # "deadline", "evicted:<reason>:<message>", "delete"
    restart_at: float | None = None
    waiting_reason: str | None = None
    pull_failed_at: float | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Kubelet:
    def __init__(self, emu: KubeEmulator, root: Path) -> None:
        self.emu = emu
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, Container] = {}
        self.enforces_memory = cgroup_v1_memory_writable()
        self.cgroup_parent: Path | None = None
        if self.enforces_memory:
            self.cgroup_parent = CGROUP_ROOT / f"jobfleet-kube-emulator-{os.getpid()}-{id(self)}"
            self.cgroup_parent.mkdir(exist_ok=True)
        self.failing_images: set[str] = set()
        self.pull_backoff = 1.0
        self.restart_backoff = 1.0
        self.lock = threading.RLock()

    # -- helpers -----------------------------------------------------------------------------
    def _dir(self, pod: dict[str, Any]) -> Path:
        md = pod["metadata"]
        return self.root / f"{md['namespace']}_{md['name']}_{md['uid'][:8]}"

    def read_log(self, pod: dict[str, Any]) -> str | None:
        c = self.containers.get(pod["metadata"]["uid"])
        path = c.log_path if c else self._dir(pod) / "container.log"
        if not path.exists():
            return None
        return path.read_bytes().decode(errors="replace")

    def all_logs(self) -> list[tuple[str, str]]:
        out = []
        for path in sorted(self.root.glob("*/container.log")):
            out.append((path.parent.name, path.read_bytes().decode(errors="replace")))
        return out

    def _update(self, pod_or_c: Any, fn: Any) -> dict[str, Any] | None:
        if isinstance(pod_or_c, Container):
            ns, name = pod_or_c.namespace, pod_or_c.name
        else:
            ns, name = pod_or_c["metadata"]["namespace"], pod_or_c["metadata"]["name"]
        return self.emu.store.mutate("pods", ns, name, fn)

    # -- API hooks ---------------------------------------------------------------------------
    def delete_pod(self, pod: dict[str, Any], grace: int | None) -> dict[str, Any] | None:
        """Start deleting a pod. Returns the pod while it terminates, None once removed."""
        store = self.emu.store
        md = pod["metadata"]
        with store.lock:
            c = self.containers.get(md["uid"])
            running = c is not None and c.proc is not None and c.proc.poll() is None
            if grace is None:
                grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            if grace == 0 or not running:
                if c is not None and c.proc is not None:
                    self._signal(c, signal.SIGKILL)
                store.remove("pods", md["namespace"], md["name"])
                return None
            deadline = time.time() + grace
            if md.get("deletionTimestamp"):
                current_deadline = parse_time(md["deletionTimestamp"])
                if deadline >= current_deadline:
                    return pod

            def mark(p: dict[str, Any]) -> dict[str, Any]:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))
                p["metadata"]["deletionTimestamp"] = stamp
                p["metadata"]["deletionGracePeriodSeconds"] = grace
                return p

            new = store.mutate("pods", md["namespace"], md["name"], mark)
            assert c is not None
            c.kill_at = min(c.kill_at or deadline, deadline) if c.term_sent else None
            self.emu.wake()
            return new

    def evict(self, pod: dict[str, Any], reason: str, message: str) -> None:
        with self.emu.store.lock:
            c = self.containers.get(pod["metadata"]["uid"])
            if c is not None and c.proc is not None and c.proc.poll() is None:
                c.kill_reason = f"evicted:{reason}:{message}"
                self._signal(c, signal.SIGKILL)
                return
            self._fail_pod(pod, reason, message, disruption=True)

    # -- the loop ----------------------------------------------------------------------------
    def tick(self) -> None:
        store = self.emu.store
        with store.lock:
            pods = {p["metadata"]["uid"]: p for p in store.list("pods")}
            for uid, c in list(self.containers.items()):
                if uid not in pods:
                    self._forget(c, kill=True)
            for uid, pod in pods.items():
                if not pod["spec"].get("nodeName"):
                    continue
                phase = (pod.get("status") or {}).get("phase")
                c = self.containers.get(uid)
                if phase in TERMINAL and (c is None or c.done):
                    if pod["metadata"].get("deletionTimestamp"):
                        store.remove("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                    continue
                if c is None:
                    c = self._new_container(pod)
                self._sync(pod, c)

    def _new_container(self, pod: dict[str, Any]) -> Container:
        directory = self._dir(pod)
        directory.mkdir(parents=True, exist_ok=True)
        md = pod["metadata"]
        c = Container(
            md["uid"],
            md["namespace"],
            md["name"],
            directory,
            directory / "container.log",
            directory / "termination-log",
        )
        self.containers[md["uid"]] = c
        now = now_rfc3339()
        spec_c = pod["spec"]["containers"][0]

        def init(p: dict[str, Any]) -> dict[str, Any]:
            st = p.setdefault("status", {})
            st.setdefault("startTime", now)
            st["hostIP"] = "127.0.0.1"
            st["hostIPs"] = [{"ip": "127.0.0.1"}]
            st["podIP"] = "127.0.0.1"
            st["podIPs"] = [{"ip": "127.0.0.1"}]
            conds = {c["type"]: c for c in st.get("conditions") or []}
            for t in ("PodReadyToStartContainers", "Initialized"):
                conds.setdefault(
                    t,
                    {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
                )
            for t in ("Ready", "ContainersReady"):
                conds.setdefault(
                    t,
                    {
                        "type": t,
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "ContainersNotReady",
                        "message": f"containers with unready status: [{spec_c['name']}]",
                    },
                )
            st["conditions"] = _order_conditions(conds)
            st["containerStatuses"] = [
                self._status(
                    spec_c, {"waiting": {"reason": "ContainerCreating"}}, ready=False, restarts=0
                )
            ]
            return p

        self._update(pod, init)
        return c

    @staticmethod
    def _status(
        spec_c: dict[str, Any],
        state: dict[str, Any],
        *,
        ready: bool,
        restarts: int,
        last: dict[str, Any] | None = None,
        started: bool = False,
        container_id: str | None = None,
    ) -> dict[str, Any]:
        image = spec_c["image"]
        digest = hashlib.sha256(image.encode()).hexdigest()
        out = {
            "name": spec_c["name"],
            "image": image
            if ("/" in image.split(":")[0] or "." in image.split("/")[0])
            else f"docker.io/library/{image}",
            "imageID": f"{image.split('@')[0].rsplit(':', 1)[0]}@sha256:{digest}",
            "ready": ready,
            "restartCount": restarts,
            "started": started,
            "state": state,
            "lastState": last or {},
        }
        if container_id:
            out["containerID"] = container_id
        return out

    def _sync(self, pod: dict[str, Any], c: Container) -> None:
        now = time.time()
        md = pod["metadata"]
        deleting = bool(md.get("deletionTimestamp"))
        if c.proc is None:
            if deleting:
                self.emu.store.remove("pods", c.namespace, c.name)
                self._forget(c, kill=False)
                return
            if c.restart_at is not None and now < c.restart_at:
                return
            if self._deadline_passed(pod, now):
                self._fail_pod(
                    pod,
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )
                c.done = True
                return
            self._try_start(pod, c)
            return
        code = c.proc.poll()
        if code is not None:
            self._finished(pod, c, code)
            return
        if deleting and c.term_sent is None:
            self._terminate(
                pod, c, "delete", f"Stopping container {pod['spec']['containers'][0]['name']}"
            )
            c.kill_at = parse_time(md["deletionTimestamp"])
        elif c.term_sent is None and self._deadline_passed(pod, now):
            self._terminate(
                pod, c, "deadline", f"Stopping container {pod['spec']['containers'][0]['name']}"
            )
            c.kill_at = now + int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if c.kill_at is not None and now >= c.kill_at:
            self._signal(c, signal.SIGKILL)
            c.kill_at = None

    @staticmethod
    def _deadline_passed(pod: dict[str, Any], now: float) -> bool:
        ads = pod["spec"].get("activeDeadlineSeconds")
        start = (pod.get("status") or {}).get("startTime")
        return bool(ads and start and now - parse_time(start) >= ads)

    def _terminate(self, pod: dict[str, Any], c: Container, reason: str, message: str) -> None:
        c.kill_reason = c.kill_reason or reason
        c.term_sent = time.time()
        self.emu.record_event(pod, "Normal", "Killing", message, component="kubelet")
        self._signal(c, signal.SIGTERM)

    @staticmethod
    def _signal(c: Container, sig: int) -> None:
        if c.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, sig)

    # -- starting ----------------------------------------------------------------------------
    def _waiting(self, pod: dict[str, Any], c: Container, reason: str, message: str) -> None:
        spec_c = pod["spec"]["containers"][0]
        restarts = c.extra.get("restarts", 0)

        def wait(p: dict[str, Any]) -> dict[str, Any]:
            st = p["status"]
            st["containerStatuses"] = [
                self._status(
                    spec_c,
                    {"waiting": {"reason": reason, "message": message}},
                    ready=False,
                    restarts=restarts,
                    last=c.extra.get("last"),
                )
            ]
            return p

        self._update(pod, wait)
        c.waiting_reason = reason

    def _try_start(self, pod: dict[str, Any], c: Container) -> None:
        spec_c = pod["spec"]["containers"][0]
        image = spec_c["image"]
        if not _IMAGE_RE.match(image):
            if c.waiting_reason != "InvalidImageName":
                msg = (
                    f'Failed to apply default image tag "{image}": couldn\'t parse image name '
                    f'"{image}": invalid reference format'
                )
                self._waiting(pod, c, "InvalidImageName", msg)
                self.emu.record_event(pod, "Warning", "InspectFailed", msg, component="kubelet")
                self.emu.record_event(
                    pod, "Warning", "Failed", "Error: InvalidImageName", component="kubelet"
                )
            return
        if image in self.failing_images:
            now = time.time()
            if c.waiting_reason not in ("ErrImagePull", "ImagePullBackOff"):
                c.pull_failed_at = now
                self.emu.record_event(
                    pod, "Normal", "Pulling", f'Pulling image "{image}"', component="kubelet"
                )
                msg = (
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                    f"failed to pull and unpack image: not found"
                )
                self.emu.record_event(pod, "Warning", "Failed", msg, component="kubelet")
                self.emu.record_event(
                    pod, "Warning", "Failed", "Error: ErrImagePull", component="kubelet"
                )
                self._waiting(pod, c, "ErrImagePull", msg)
            elif c.pull_failed_at is not None and now - c.pull_failed_at >= self.pull_backoff:
                c.pull_failed_at = now
                if c.waiting_reason == "ErrImagePull":
                    msg = f'Back-off pulling image "{image}"'
                    self.emu.record_event(pod, "Normal", "BackOff", msg, component="kubelet")
                    self.emu.record_event(
                        pod, "Warning", "Failed", "Error: ImagePullBackOff", component="kubelet"
                    )
                    self._waiting(pod, c, "ImagePullBackOff", msg)
                else:
                    msg = (
                        f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                        "failed to pull and unpack image: not found"
                    )
                    self._waiting(pod, c, "ErrImagePull", msg)
            return
        env, error = self._environment(pod, c)
        if error is not None:
            if (
                c.waiting_reason != "CreateContainerConfigError"
                or c.extra.get("config_error") != error
            ):
                c.extra["config_error"] = error
                self._waiting(pod, c, "CreateContainerConfigError", error)
                self.emu.record_event(
                    pod, "Warning", "Failed", f"Error: {error}", component="kubelet"
                )
            return
        if c.waiting_reason is None and not c.extra.get("pulled"):
            c.extra["pulled"] = True
            self.emu.record_event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                component="kubelet",
            )
        argv = [_expand(a, env) for a in (spec_c.get("command") or []) + (spec_c.get("args") or [])]
        if not spec_c.get("command"):
            self._start_error(
                pod,
                c,
                "the emulator runs `command + args` and has no image "
                "entrypoint: the container has no command",
            )
            return
        exe = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
        if exe is None or not os.access(exe, os.X_OK):
            self._start_error(
                pod,
                c,
                f"failed to create containerd task: failed to create shim "
                f'task: OCI runtime create failed: exec: "{argv[0]}": '
                f"executable file not found in $PATH",
            )
            return
        limit = None
        mem = ((spec_c.get("resources") or {}).get("limits") or {}).get("memory")
        if mem is not None:
            limit = int(parse_quantity(mem))
        cgroup = self._make_cgroup(c, limit) if (limit and self.enforces_memory) else None
        if cgroup is not None:
            argv = [
                "/bin/sh",
                "-c",
                'echo $$ > "$0/cgroup.procs" && exec "$@"',
                str(cgroup),
                exe,
                *argv[1:],
            ]
        else:
            argv = [exe, *argv[1:]]
        c.message_path.write_bytes(b"")
        with open(c.log_path, "ab") as log:
            c.proc = subprocess.Popen(
                argv,
                cwd=c.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        c.cgroup, c.limit = cgroup, limit
        c.started = time.time()
        c.term_sent = c.kill_at = c.restart_at = None
        c.kill_reason = None
        c.waiting_reason = None
        threading.Thread(
            target=self._reap, args=(c.proc,), daemon=True, name=f"kubelet-wait-{c.name}"
        ).start()
        self.emu.record_event(
            pod, "Normal", "Created", f"Created container {spec_c['name']}", component="kubelet"
        )
        self.emu.record_event(
            pod, "Normal", "Started", f"Started container {spec_c['name']}", component="kubelet"
        )
        now = now_rfc3339()
        restarts = c.extra.get("restarts", 0)
        cid = f"emulator://{c.proc.pid}"

        def running(p: dict[str, Any]) -> dict[str, Any]:
            st = p["status"]
            st["phase"] = "Running"
            conds = {x["type"]: x for x in st.get("conditions") or []}
            for t in ("Ready", "ContainersReady"):
                conds[t] = {
                    "type": t,
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                }
            st["conditions"] = _order_conditions(conds)
            st["containerStatuses"] = [
                self._status(
                    spec_c,
                    {"running": {"startedAt": now}},
                    ready=True,
                    restarts=restarts,
                    last=c.extra.get("last"),
                    started=True,
                    container_id=cid,
                )
            ]
            return p

        self._update(pod, running)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(Exception):
            proc.wait()
        self.emu.wake()

    def _environment(self, pod: dict[str, Any], c: Container) -> tuple[dict[str, str], str | None]:
        spec_c = pod["spec"]["containers"][0]
        md = pod["metadata"]
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOSTNAME": pod["spec"].get("hostname") or md["name"],
            "HOME": str(c.directory),
        }
        term_path = spec_c.get("terminationMessagePath") or "/dev/termination-log"
        for var in spec_c.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                value = _expand(var.get("value") or "", env)
            else:
                vf = var["valueFrom"]
                if "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    secret = self.emu.store.get("secrets", md["namespace"], ref["name"])
                    optional = bool(ref.get("optional"))
                    if secret is None:
                        if optional:
                            continue
                        return env, f'secret "{ref["name"]}" not found'
                    data = secret.get("data") or {}
                    if ref["key"] not in data:
                        if optional:
                            continue
                        return env, (
                            f"couldn't find key {ref['key']} in Secret "
                            f"{md['namespace']}/{ref['name']}"
                        )
                    import base64

                    value = base64.b64decode(data[ref["key"]]).decode(errors="replace")
                elif "fieldRef" in vf:
                    value = _field_ref(pod, vf["fieldRef"]["fieldPath"])
                else:
                    return env, (
                        f"the emulator does not support valueFrom "
                        f"{next(iter(vf), '?')} (env {name})"
                    )
            if value == term_path:
                value = str(c.message_path)
            env[name] = value
        return env, None

    def _start_error(self, pod: dict[str, Any], c: Container, message: str) -> None:
        now = now_rfc3339()
        self.emu.record_event(pod, "Warning", "Failed", f"Error: {message}", component="kubelet")
        self._exited(
            pod,
            c,
            {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": "1970-01-01T00:00:00Z",
                "finishedAt": now,
            },
        )

    # -- ending ------------------------------------------------------------------------------
    def _make_cgroup(self, c: Container, limit: int) -> Path | None:
        assert self.cgroup_parent is not None
        path = self.cgroup_parent / f"pod-{c.pod_uid}"
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(str(limit))
            memsw = path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                with contextlib.suppress(OSError):
                    memsw.write_text(str(limit))
            swappiness = path / "memory.swappiness"
            if swappiness.exists():
                with contextlib.suppress(OSError):
                    swappiness.write_text("0")
        except OSError:
            return None
        return path

    @staticmethod
    def _oom_killed(c: Container, code: int) -> bool:
        if c.cgroup is None:
            return False
        try:
            control = (c.cgroup / "memory.oom_control").read_text()
        except OSError:
            control = ""
        for line in control.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        if code == -signal.SIGKILL or code == 137:
            try:
                failcnt = int((c.cgroup / "memory.failcnt").read_text().strip() or 0)
            except (OSError, ValueError):
                failcnt = 0
            return failcnt > 0
        return False

    def _remove_cgroup(self, c: Container) -> None:
        if c.cgroup is None:
            return
        for _ in range(100):
            try:
                c.cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                try:
                    for pid in (c.cgroup / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
                time.sleep(0.02)
        c.cgroup = None

    def _finished(self, pod: dict[str, Any], c: Container, code: int) -> None:
        assert c.proc is not None
        self._signal(c, signal.SIGKILL)  # the rest of the container's processes
        oom = self._oom_killed(c, code)
        self._remove_cgroup(c)
        spec_c = pod["spec"]["containers"][0]
        exit_code = 128 - code if code < 0 else code
        state: dict[str, Any] = {
            "exitCode": 137 if oom else exit_code,
            "reason": "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error"),
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.started)),
            "finishedAt": now_rfc3339(),
            "containerID": f"emulator://{c.proc.pid}",
        }
        if code < 0:
            state["signal"] = -code
        try:
            with open(c.message_path, "rb") as f:
                message = f.read(4096).decode(errors="replace")
        except OSError:
            message = ""
        if (
            not message
            and exit_code != 0
            and spec_c.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            text = c.log_path.read_bytes().decode(errors="replace") if c.log_path.exists() else ""
            message = "".join(text.splitlines(keepends=True)[-80:])[-2048:]
        if message:
            state["message"] = message
        c.proc = None
        self._exited(pod, c, state)

    def _exited(self, pod: dict[str, Any], c: Container, state: dict[str, Any]) -> None:
        spec_c = pod["spec"]["containers"][0]
        policy = pod["spec"].get("restartPolicy", "Always")
        failed = state["exitCode"] != 0
        reason = c.kill_reason or ""
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        restart = (
            not deleting
            and not reason
            and (policy == "Always" or (policy == "OnFailure" and failed))
        )
        restarts = c.extra.get("restarts", 0)
        if restart:
            c.extra["restarts"] = restarts + 1
            c.extra["last"] = {"terminated": state}
            c.restart_at = time.time() + self.restart_backoff
            c.waiting_reason = "CrashLoopBackOff"

            def back_off(p: dict[str, Any]) -> dict[str, Any]:
                st = p["status"]
                st["containerStatuses"] = [
                    self._status(
                        spec_c,
                        {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": f"back-off restarting failed container {spec_c['name']}",
                            }
                        },
                        ready=False,
                        restarts=restarts + 1,
                        last=c.extra["last"],
                    )
                ]
                _set_not_ready(st)
                return p

            self._update(pod, back_off)
            return
        c.done = True
        if reason.startswith("evicted:"):
            _, ev_reason, ev_message = reason.split(":", 2)
            self._fail_pod(pod, ev_reason, ev_message, disruption=True, state=state)
        elif reason == "deadline":
            self._fail_pod(
                pod,
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
                state=state,
            )
        else:
            phase = "Failed" if failed or deleting else "Succeeded"

            def finish(p: dict[str, Any]) -> dict[str, Any]:
                st = p["status"]
                st["phase"] = phase
                st["containerStatuses"] = [
                    self._status(
                        spec_c,
                        {"terminated": state},
                        ready=False,
                        restarts=restarts,
                        last=c.extra.get("last"),
                        started=False,
                        container_id=state.get("containerID"),
                    )
                ]
                _set_not_ready(st, reason="PodCompleted")
                return p

            self._update(pod, finish)
        if deleting:
            self.emu.store.remove("pods", c.namespace, c.name)
            self._forget(c, kill=False)

    def _fail_pod(
        self,
        pod: dict[str, Any],
        reason: str,
        message: str,
        *,
        disruption: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        spec_c = pod["spec"]["containers"][0]
        c = self.containers.get(pod["metadata"]["uid"])
        restarts = c.extra.get("restarts", 0) if c else 0
        now = now_rfc3339()
        if c is not None:
            c.done = True

        def fail(p: dict[str, Any]) -> dict[str, Any]:
            st = p.setdefault("status", {})
            st["phase"] = "Failed"
            st["reason"] = reason
            st["message"] = message
            term = state or {
                "exitCode": 137,
                "reason": "Error",
                "startedAt": None,
                "finishedAt": now,
            }
            if state is None:
                old = (st.get("containerStatuses") or [{}])[0].get("state") or {}
                if "running" not in old:
                    term = None
                else:
                    term["startedAt"] = old["running"]["startedAt"]
            if term is not None:
                st["containerStatuses"] = [
                    self._status(
                        spec_c,
                        {"terminated": term},
                        ready=False,
                        restarts=restarts,
                        last=c.extra.get("last") if c else None,
                    )
                ]
            elif st.get("containerStatuses"):
                st["containerStatuses"] = [
                    self._status(
                        spec_c,
                        {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "ContainerStatusUnknown",
                                "message": "The container could not be located "
                                "when the pod was terminated",
                                "startedAt": None,
                                "finishedAt": now,
                            }
                        },
                        ready=False,
                        restarts=restarts,
                    )
                ]
            if disruption:
                conds = [x for x in st.get("conditions") or [] if x["type"] != "DisruptionTarget"]
                conds.append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "TerminationByKubelet"
                        if reason == "Evicted"
                        else "DeletionByPodGC"
                        if reason == "NodeLost"
                        else "TerminationByKubelet",
                        "message": message,
                    }
                )
                st["conditions"] = conds
            _set_not_ready(st, reason="PodFailed")
            return p

        self._update(pod, fail)
        if reason == "DeadlineExceeded":
            self.emu.record_event(pod, "Normal", "DeadlineExceeded", message, component="kubelet")
        elif disruption:
            self.emu.record_event(pod, "Warning", reason, message, component="kubelet")

    def _forget(self, c: Container, *, kill: bool) -> None:
        if kill and c.proc is not None:
            self._signal(c, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=5)
        self._remove_cgroup(c)
        self.containers.pop(c.pod_uid, None)

    def stop(self) -> None:
        with self.emu.store.lock:
            containers = list(self.containers.values())
            for c in containers:
                self._signal(c, signal.SIGKILL)
            for c in containers:
                if c.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        c.proc.wait(timeout=10)
                self._remove_cgroup(c)
            self.containers.clear()
            if self.cgroup_parent is not None:
                with contextlib.suppress(OSError):
                    self.cgroup_parent.rmdir()


def _order_conditions(conds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
        "DisruptionTarget",
    ]
    return sorted(
        conds.values(), key=lambda x: order.index(x["type"]) if x["type"] in order else len(order)
    )


def _set_not_ready(st: dict[str, Any], reason: str = "ContainersNotReady") -> None:
    now = now_rfc3339()
    conds = {x["type"]: x for x in st.get("conditions") or []}
    for t in ("Ready", "ContainersReady"):
        if conds.get(t, {}).get("status") != "False" or conds[t].get("reason") != reason:
            conds[t] = {
                "type": t,
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
                "reason": reason,
            }
    st["conditions"] = _order_conditions(conds)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables replaced, $$(X) escapes to $(X)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        name = m.group(1)
        return env.get(name, m.group(0))

    return re.sub(r"\$\$\([^)]*\)|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)", sub, text)


def _field_ref(pod: dict[str, Any], path: str) -> str:
    md = pod["metadata"]
    simple = {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName") or "",
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName") or "",
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    m = _FIELD_RE.match(path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    return ""
