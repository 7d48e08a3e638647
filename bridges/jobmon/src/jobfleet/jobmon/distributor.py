"""The Jobmon-side distributor: the jobfleet host for the instances Jobmon submits.

Jobmon builds it with the cluster's name and its `connection_parameters` JSON only, so it does
what `jobfleet run`'s host does for a backend: resolves the backend's settings, makes the
channel (and serves it over HTTP when the nodes need that), stores one task spec per instance
whose command is Jobmon's worker command, submits the jobfleet worker-node command through the
backend's distributor, and reads the wrappers' final reports for triage.

The distributor ids Jobmon sees are the jobfleet task-instance ids (whole numbers, which
Jobmon's wire format wants); the backend's own ids stay inside.
"""

from __future__ import annotations

import itertools
import logging
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from jobfleet.core.channel import Channel, EventCursor, FinalReport, TaskSpec, open_channel
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.resources import ResourceRequest
from jobfleet.jobmon.command import WorkerCommand, parse_worker_command, triage_state
from jobfleet.jobmon.worker_node import ARRAY_STEP_VARIABLE
from jobmon.core.cluster_protocol import ClusterDistributor
from jobmon.core.exceptions import RemoteExitInfoNotAvailable

logger = logging.getLogger(__name__)

CONNECTION_KEYS: Final = frozenset(
    {
        "settings",
        "channel",
        "channel_bind",
        "work_dir",
        "arrays",
        "triage_patience",
        "worker_node_entry_point",
        "heartbeat_interval",
    }
)
"""The keys of a `jobfleet_*` cluster's `connection_parameters` (docs/jobmon.md)."""

DEFAULT_TRIAGE_PATIENCE: Final = 120.0
"""Seconds triage waits for a wrapper's final report before answering from the backend alone."""

PASSED_VARIABLES: Final = ("JOBMON__",)
"""Prefixes of the distributor's variables given to every instance: Jobmon's configuration
(`JOBMON__HTTP__SERVICE_URL`, …), which its worker needs on nodes that share no environment."""


@dataclass(frozen=True)
class BridgeOptions:
    """The cluster's `connection_parameters`, checked."""

    settings: Mapping[str, Any]
    channel: str | None
    channel_bind: str | None
    work_dir: str | None
    arrays: bool
    triage_patience: float
    worker_node_entry_point: str | None
    heartbeat_interval: float | None

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> BridgeOptions:
        unknown = sorted(set(parameters) - CONNECTION_KEYS)
        if unknown:
            raise BackendError(
                f"Unknown connection parameters {', '.join(map(repr, unknown))} for a jobfleet "
                f"cluster; accepted: {', '.join(sorted(CONNECTION_KEYS))} (docs/jobmon.md)."
            )
        settings = parameters.get("settings")
        settings = {} if settings is None else settings
        if not isinstance(settings, Mapping):
            raise BackendError(f"connection parameter 'settings' must be an object: {settings!r}")
        arrays = parameters.get("arrays", True)
        if not isinstance(arrays, bool):
            raise BackendError(f"connection parameter 'arrays' must be true or false: {arrays!r}")
        patience = parameters.get("triage_patience", DEFAULT_TRIAGE_PATIENCE)
        if isinstance(patience, bool) or not isinstance(patience, int | float) or patience < 0:
            raise BackendError(f"'triage_patience' must be seconds, 0 or more: {patience!r}")
        heartbeat = parameters.get("heartbeat_interval")
        if heartbeat is not None and (
            isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or heartbeat <= 0
        ):
            raise BackendError(f"'heartbeat_interval' must be positive seconds: {heartbeat!r}")
        strings = {}
        for key in ("channel", "channel_bind", "work_dir", "worker_node_entry_point"):
            value = parameters.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise BackendError(f"connection parameter {key!r} must be a string: {value!r}")
            strings[key] = value
        return cls(
            settings=dict(settings),
            arrays=arrays,
            triage_patience=float(patience),
            heartbeat_interval=None if heartbeat is None else float(heartbeat),
            **strings,
        )


class JobmonDistributor(ClusterDistributor):
    """A jobfleet backend's distributor, as Jobmon builds and calls it."""

    backend: ClassVar[str]
    runs_commands: ClassVar[bool] = True
    """False for a backend that runs nothing (jobfleet's dummy, by the class attribute
    `runs_commands = False` on its distributor): the bridge then reports running and done to
    Jobmon itself, as Jobmon's own dummy distributor does."""

    def __init__(self, cluster_name: str, *args: Any, **connection_parameters: Any) -> None:
        self._cluster_name = cluster_name
        self.options = BridgeOptions.from_parameters(connection_parameters)
        self._lock = threading.RLock()
        self._started = False
        self._inner: Any = None
        self._channel: Channel | None = None
        self._served: Any = None
        self._owned_dirs: list[Path] = []
        self._ids = itertools.count(1)
        self._array_ids = itertools.count(1)
        self._inner_ids: dict[str, str] = {}
        self._finals: dict[int, FinalReport] = {}
        self._cursor: EventCursor | None = None
        self._triage_started: dict[str, float] = {}

    # -- Jobmon's protocol: identity ----------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        return self._cluster_name

    @property
    def worker_node_entry_point(self) -> str:
        """Jobmon's worker on the nodes: the connection parameter, else the one beside this
        Python, else on PATH."""
        if self.options.worker_node_entry_point:
            return self.options.worker_node_entry_point
        beside = Path(sys.executable).with_name("worker_node_entry_point")
        if beside.exists():
            return str(beside)
        return shutil.which("worker_node_entry_point") or "worker_node_entry_point"

    # -- starting and stopping ----------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            from jobfleet.core.plugins import get_cluster

            plugin = get_cluster(self.backend)
            settings = plugin.settings(self.options.settings, os.environ)
            kwargs: dict[str, Any] = {} if settings is None else {"settings": settings}
            if self.runs_commands:
                kwargs.update(self._open_channel(plugin.distributor_class))
            self._inner = plugin.distributor_class(self._cluster_name, **kwargs)
            self._inner.start()
            self._started = True

    def _open_channel(self, distributor_class: type) -> dict[str, Any]:
        """Make the channel the wrappers report to; the inner distributor's keyword arguments."""
        from jobfleet.core.base_distributor import BaseClusterDistributor
        from jobfleet.core.private import make_private_dirs

        work = self._work_dir()
        wanted = self.options.channel
        network = bool(getattr(distributor_class, "needs_network_channel", False))
        if wanted is None:
            wanted = "http" if network else None
        scheme = urlsplit(wanted).scheme.lower() if wanted else ""
        kwargs: dict[str, Any] = {}
        if wanted is not None and (wanted == "http" or scheme in ("http", "https")):
            channel = open_channel(str(work / "channel"), create=True)
            kwargs.update(self._serve(channel, wanted))
        else:
            if wanted is None:
                root = work / "channel"
            else:
                # A fresh directory per distributor under the shared one: task-instance ids
                # count from 1 in each, and never meet another run's reports.
                shared = Path(wanted.removeprefix("file://"))
                shared.mkdir(parents=True, exist_ok=True)
                root = Path(tempfile.mkdtemp(prefix=f"jobmon-{os.getpid()}-", dir=shared))
                self._owned_dirs.append(root)
            channel = open_channel(str(root), create=True)
            kwargs["host_url"] = channel.url
        self._channel = channel
        if issubclass(distributor_class, BaseClusterDistributor):
            kwargs["state_dir"] = make_private_dirs(work / "distributor")
        return kwargs

    def _work_dir(self) -> Path:
        if self.options.work_dir:
            base = Path(self.options.work_dir)
            base.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"jobmon-{os.getpid()}-", dir=base))
        else:
            work = Path(tempfile.mkdtemp(prefix="jobfleet-jobmon-"))
        self._owned_dirs.append(work)
        return work

    def _serve(self, channel: Channel, wanted: str) -> dict[str, Any]:
        """Serve the channel over HTTP: at `channel_bind` (default: the URL's host and port,
        or loopback on any port for a bare "http"), advertised as the URL given."""
        from jobfleet.core.channel import FileChannel
        from jobfleet.core.host.channel_server import serve_channel

        assert isinstance(channel, FileChannel)
        parts = urlsplit(wanted)
        address = None
        bind = self.options.channel_bind or "127.0.0.1:0"
        if parts.hostname:
            address = f"{parts.scheme}://{parts.netloc}"
            if not self.options.channel_bind:
                bind = f"{parts.hostname}:{parts.port or 0}"
        key = f"jobmon-{os.getpid()}-{os.urandom(4).hex()}"
        self._served = serve_channel(channel, key, bind=bind, address=address)
        return {"host_url": str(self._served.url), "channel_token": str(self._served.token)}

    def stop(self) -> None:
        with self._lock:
            if self._inner is not None:
                try:
                    self._inner.stop()
                finally:
                    self._inner = None
            if self._served is not None:
                self._served.close()
                self._served = None
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            for path in reversed(self._owned_dirs):
                shutil.rmtree(path, ignore_errors=True)
            self._owned_dirs.clear()
            self._started = False

    # -- submission ---------------------------------------------------------------------------

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        worker = self._parse(command, "job")
        with self._lock:
            self._require_started()
            ti = next(self._ids)
            resources = inner_resources(requested_resources)
            if self.runs_commands:
                self._put_spec(ti, worker, name, resources, step=None)
            inner_id = self._inner.submit_to_batch_distributor(
                f"job --task-instance-id {ti}", name, resources
            )
            self._inner_ids[str(ti)] = str(inner_id)
        if not self.runs_commands:
            self._report_without_running(str(ti), worker.task_instance_id)
        return str(ti)

    def submit_array_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any], array_length: int
    ) -> dict[int, str]:
        """One submission of the backend per Jobmon batch, with 0-based steps."""
        if not self.options.arrays:
            raise NotImplementedError("arrays are off for this cluster (connection parameter)")
        worker = self._parse(command, "array")
        if isinstance(array_length, bool) or not isinstance(array_length, int) or array_length < 1:
            raise ValueError(f"array_length must be 1 or more, not {array_length!r}")
        with self._lock:
            self._require_started()
            resources = inner_resources(requested_resources)
            steps = {step: next(self._ids) for step in range(array_length)}
            inner_ids = self._submit_steps(worker, name, resources, steps)
            self._inner_ids.update({str(steps[s]): str(i) for s, i in inner_ids.items()})
        if not self.runs_commands:
            for step, ti in steps.items():
                jobmon_ti = self._array_task_instance(worker, step)
                self._report_without_running(str(ti), jobmon_ti)
        return {step: str(ti) for step, ti in steps.items()}

    def _submit_steps(
        self, worker: WorkerCommand, name: str, resources: dict[str, Any], steps: dict[int, int]
    ) -> dict[int, str]:
        if self.runs_commands:
            for step, ti in steps.items():
                self._put_spec(ti, worker, name, resources, step=step)
        array_id = next(self._array_ids)
        if self._channel is not None:
            self._channel.put_array(array_id, 0, steps)
        try:
            found = self._inner.submit_array_to_batch_distributor(
                f"array --array-id {array_id} --batch-number 0", name, resources, len(steps)
            )
            return {int(step): str(inner) for step, inner in found.items()}
        except NotImplementedError:
            # A backend without arrays: one submission per step, each spec knowing its step.
            return {
                step: str(
                    self._inner.submit_to_batch_distributor(
                        f"job --task-instance-id {ti}", name, resources
                    )
                )
                for step, ti in steps.items()
            }

    def _put_spec(
        self,
        ti: int,
        worker: WorkerCommand,
        name: str,
        resources: Mapping[str, Any],
        *,
        step: int | None,
    ) -> None:
        assert self._channel is not None
        request = ResourceRequest.parse(resources)
        environment = {
            key: value for key, value in os.environ.items() if key.startswith(PASSED_VARIABLES)
        }
        if step is not None:
            environment[ARRAY_STEP_VARIABLE] = str(step)
        argv = [*shlex.split(self.worker_node_entry_point), *worker.argv()]
        extra: dict[str, Any] = {}
        if self.options.heartbeat_interval is not None:
            extra["heartbeat_interval"] = self.options.heartbeat_interval
        self._channel.put_spec(
            TaskSpec(
                task_instance_id=ti,
                command=shlex.join(argv),
                name=name,
                environment=environment,
                memory=request.memory,
                runtime=request.runtime,
                cores=request.cores,
                **extra,
            )
        )

    def _parse(self, command: str, kind: str) -> WorkerCommand:
        worker = parse_worker_command(command)
        if worker.kind != kind:
            raise BackendError(f"expected Jobmon's worker_node_{kind} command, got {command!r}")
        if worker.cluster_name != self._cluster_name:
            raise BackendError(
                f"the worker command names the cluster {worker.cluster_name!r}, but this "
                f"distributor serves {self._cluster_name!r}"
            )
        return worker

    def _require_started(self) -> None:
        if not self._started:
            raise BackendError("the jobfleet distributor was not started (call start() first)")

    # -- backends that run nothing ------------------------------------------------------------

    def _report_without_running(self, distributor_id: str, task_instance_id: int | None) -> None:
        """Tell Jobmon the instance ran and succeeded, as Jobmon's own dummy does."""
        from jobfleet.jobmon.worker_node import JobmonWorkerNode
        from jobmon.worker_node.worker_node_task_instance import WorkerNodeTaskInstance

        assert task_instance_id is not None
        node = JobmonWorkerNode(distributor_id=distributor_id)
        instance = WorkerNodeTaskInstance(cluster_interface=node, task_instance_id=task_instance_id)
        instance.log_running()
        instance.set_command_output(0, "", "")
        instance.log_done()

    def _array_task_instance(self, worker: WorkerCommand, step: int) -> int:
        from jobmon.core.requester import Requester

        route = f"/get_array_task_instance_id/{worker.array_id}/{worker.batch_number}/{step}"
        _, response = Requester.from_defaults().send_request(
            app_route=route, message={}, request_type="get"
        )
        return int(response["task_instance_id"])

    # -- watching -----------------------------------------------------------------------------

    def _read_finals(self) -> None:
        if self._channel is None:
            return
        events, self._cursor = self._channel.read_events(self._cursor)
        for event in events:
            if isinstance(event.report, FinalReport):
                self._finals.setdefault(event.task_instance_id, event.report)

    def _inner_of(self, distributor_ids: list[str]) -> dict[str, str]:
        return {d: self._inner_ids[d] for d in distributor_ids if d in self._inner_ids}

    def get_submitted_or_running(self, distributor_ids: list[str] | None = None) -> set[str]:
        with self._lock:
            if self._inner is None:
                return set()
            self._read_finals()
            wanted = list(self._inner_ids) if distributor_ids is None else distributor_ids
            pending = {
                d: inner
                for d, inner in self._inner_of([str(d) for d in wanted]).items()
                if not (d.isdigit() and int(d) in self._finals)
            }
            alive = self._inner.get_submitted_or_running(list(pending.values()))
            return {d for d, inner in pending.items() if inner in alive}

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        with self._lock:
            if self._inner is None:
                return {}
            ours = self._inner_of([str(d) for d in distributor_ids])
            errors = self._inner.get_queueing_errors(list(ours.values()))
            return {d: errors[inner] for d, inner in ours.items() if inner in errors}

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        with self._lock:
            if self._inner is None:
                return
            ours = self._inner_of([str(d) for d in distributor_ids])
            if ours:
                self._inner.terminate_task_instances(list(ours.values()))

    def get_remote_exit_info(self, distributor_id: str) -> tuple[str, str]:
        """How an instance in Jobmon's triage ended: always Z, U or F, from the wrapper's final
        report when there is one, else from the backend; `RemoteExitInfoNotAvailable` while
        `triage_patience` lasts and neither can tell yet. Never raises anything else."""
        key = str(distributor_id)
        with self._lock:
            now = time.monotonic()
            first = self._triage_started.setdefault(key, now)
            patient = now - first < self.options.triage_patience
            try:
                answer = self._exit_info(key, final_only=patient)
            except Exception as exc:
                logger.warning("triage of %s failed: %s", key, exc, exc_info=True)
                answer = None
                if not patient:
                    answer = ("U", f"jobfleet could not tell how it ended: {exc}")
            if answer is None:
                raise RemoteExitInfoNotAvailable
            self._triage_started.pop(key, None)
            return answer

    def _exit_info(self, key: str, *, final_only: bool) -> tuple[str, str] | None:
        self._read_finals()
        report = self._finals.get(int(key)) if key.isdigit() else None
        if report is not None:
            state = report.error_state.value
            message = report.message or f"the jobfleet wrapper reported {state}"
            return triage_state(state), f"{message} (jobfleet wrapper: {state})"
        inner = self._inner_ids.get(key)
        if inner is None or self._inner is None:
            return None if final_only else ("U", f"jobfleet does not know the instance {key}")
        info = self._inner.get_remote_exit_info(inner)
        state, message = (
            (info.error_state.value, info.error_message)
            if isinstance(info, RemoteExitInfo)
            else (str(info[0]), str(info[1]))
        )
        finalized = getattr(info, "finalized", True)
        # Z and F are decisive; anything else waits for the wrapper's report while patience lasts.
        if final_only and not (finalized and triage_state(state) in ("Z", "F")):
            return None
        return triage_state(state), f"{message} ({self.backend}: {state})"


def inner_resources(requested: Mapping[str, Any]) -> dict[str, Any]:
    """Jobmon's requested resources (memory in GiB) in jobfleet's canonical form."""
    from jobfleet.jobmon.units import jobfleet_request

    request = ResourceRequest.parse(jobfleet_request(requested))
    return request.to_dict()


def build(backend: str) -> type[JobmonDistributor]:
    """The Jobmon distributor class over the jobfleet backend `backend`."""
    from jobfleet.core.plugins import get_cluster

    plugin = get_cluster(backend)
    attributes = {
        "backend": backend,
        "runs_commands": bool(getattr(plugin.distributor_class, "runs_commands", True)),
        "__module__": __name__,
    }
    name = f"Jobfleet{backend.title().replace('_', '')}Distributor"
    return type(name, (JobmonDistributor,), attributes)
