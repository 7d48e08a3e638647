"""The Kubernetes distributor: a Job per task, an Indexed Job per array, one watch per kind.

What it never does (the failure modes of other Kubernetes integrations, seed 003 and
`../shared/notes/backends.md`):
- ask the API server about each task: status, queueing errors and exit info are answered from
  two watch streams (pods, Jobs) selected by the run's label, so a status round costs no call;
- submit an array as a thousand Jobs: an array is one Indexed Job (one create);
- take a Job removed by the cluster's TTL for a lost one: the outcome seen before is kept;
- miss `ImagePullBackOff` (reasons are matched case-insensitively) or an unschedulable pod;
- put the channel token anywhere but in the run's one Secret.

Ids: a task's id is its Job's name (`jf-RUN-HINT-RANDOM`), an array step's is `JOB_INDEX`
(an underscore never occurs in a Job's name).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.cluster_protocol import NodeInfo
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.resources import ResourceRequest
from jobfleet.core.wrapper import (
    ENTRY_POINT_VARIABLE,
    HOST_ONLY_VARIABLES,
    entry_point_argv,
)
from jobfleet.plugins.kubernetes import exits, manifests
from jobfleet.plugins.kubernetes.api import JOBS, NODES, PODS, SECRETS, KubeApi, KubeApiError
from jobfleet.plugins.kubernetes.manifests import (
    ARRAY_LABEL,
    BATCH_LABEL,
    INDEX_KEY,
    JOB_LABEL,
    JOB_NAME_LABELS,
    TASK_LABEL,
    JobRequest,
)
from jobfleet.plugins.kubernetes.quantity import parse_quantity
from jobfleet.plugins.kubernetes.settings import KubernetesSettings
from jobfleet.plugins.kubernetes.watch import Informer

log = logging.getLogger(__name__)

_ID = re.compile(r"(jf-[0-9a-f]{10}(?:-[a-z0-9-]{1,16})?-[0-9a-f]{8})(?:_(\d{1,7}))?")
_DELETE_CHUNK = 50  # Job names per deletecollection (a label selector `in (…)`)
_KILL_POLL = 0.05
_BACKGROUND = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}


@dataclass
class _Submitted:
    at: float
    length: int | None  # None: a single task's Job


class KubernetesDistributor(BaseClusterDistributor):
    """Submits worker-node wrappers as Kubernetes Jobs and answers from watch streams."""

    cluster_type = "kubernetes"
    settings_class = KubernetesSettings
    settings: KubernetesSettings
    needs_network_channel = True
    """Pods share no file system with the host: the host serves an http:// channel."""

    def __init__(
        self,
        cluster_name: str,
        *args: Any,
        api: KubeApi | None = None,
        namespace: str | None = None,
        **connection_parameters: Any,
    ) -> None:
        # The base keeps host_url, settings and the channel token (`channel_token=`, else
        # $JOBFLEET_CHANNEL_TOKEN), which goes into the run's Secret, never into a pod spec.
        super().__init__(cluster_name, *args, **connection_parameters)
        self.run = manifests.run_id(self.host_url, cluster_name)
        self.selector = manifests.run_selector(self.run)
        self.api = api
        self._own_api = api is None
        self.namespace = namespace or self.settings.namespace
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pods: Informer | None = None
        self._jobs: Informer | None = None
        self._submitted: dict[str, _Submitted] = {}
        self._pod_of: dict[str, dict[str, Any]] = {}  # id → its pod, as last seen
        self._pod_gone: set[str] = set()
        self._first_seen: dict[str, float] = {}  # pod name → when first seen
        self._job_of: dict[str, dict[str, Any]] = {}  # Job name → the Job, as last seen
        self._job_gone: set[str] = set()
        self._killed: set[str] = set()
        self._ignored: set[str] = set()
        self._secret: str | None = None
        self.transitions: dict[str, list[str]] = {}
        """Each id's pod phases in the order seen (a phase is recorded once per change)."""

    # -- the protocol ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._pods is not None:
            return
        if self.api is None:
            self.api, namespace = KubeApi.connect(
                kubeconfig=str(self.settings.kubeconfig) if self.settings.kubeconfig else None,
                context=self.settings.context,
                in_cluster=self.settings.in_cluster,
                max_calls_per_second=self.settings.max_api_calls_per_second,
                retries=self.settings.api_retries,
                request_timeout=self.settings.request_timeout,
            )
            self.namespace = self.namespace or namespace
        self.namespace = self.namespace or "default"
        self._jobs = self._informer(JOBS, self._on_job)
        self._pods = self._informer(PODS, self._on_pod)
        self._jobs.start()
        self._pods.start()
        if self.channel_token:
            self._put_secret(self.channel_token)

    def _informer(self, resource: Any, listener: Any) -> Informer:
        return Informer(
            self._require_api(),
            resource,
            self.namespace or "default",
            self.selector,
            listener,
            self._lock,
            watch_timeout=self.settings.watch_timeout,
            relist_interval=self.settings.relist_interval,
        )

    def stop(self) -> None:
        """Stop watching; delete every Job, pod and the Secret of this run; wait for the pods."""
        api = self.api
        informers = [i for i in (self._pods, self._jobs) if i is not None]
        if api is None or not informers:
            return
        for informer in informers:
            informer.stop()
        self._pods = self._jobs = None
        try:
            self._delete_collection(JOBS, self.selector, "the run's Jobs")
            self._delete_collection(PODS, self.selector, "the run's pods")
            self._wait_no_pods()
            if self._secret is not None or self.channel_token:
                api.call(
                    "DELETE",
                    SECRETS.path(self.namespace, manifests.secret_name(self.run)),
                    verb="delete",
                    resource="secrets",
                    what=f"the Secret {manifests.secret_name(self.run)}",
                    body=_BACKGROUND,
                    ok_missing=True,
                )
                self._secret = None
        finally:
            self.packer.close()
            if self._own_api:
                api.close()
                self.api = None

    def wrapper_argv(self, command: str) -> list[str]:
        """The wrapper as the image has it (`worker_command`, or $JOBFLEET_WORKER_NODE), with
        the channel address pods reach (`channel_address`)."""
        argv = super().wrapper_argv(command)
        argv = argv[len(entry_point_argv()) :]
        if os.environ.get(ENTRY_POINT_VARIABLE, "").strip():
            entry = entry_point_argv()
        else:
            entry = shlex.split(self.settings.worker_command)
        if self.settings.channel_address:
            where = argv.index("--host-url")
            argv[where + 1] = self.settings.channel_address
        return [*entry, *argv]

    def wrapper_options(self) -> list[str]:
        return ["--kill-grace", str(self.settings.kill_grace)]

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        request = ResourceRequest.parse(requested_resources)
        job = manifests.job_name(self.run, name)
        labels = _command_labels(command)
        self._create_job(job, command, request, None, labels)
        return job

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
        job = manifests.job_name(self.run, name)
        self._create_job(job, command, request, array_length, _command_labels(command))
        return {index: f"{job}_{index}" for index in range(array_length)}

    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        """From the watched state: no API call, however many ids (a packed member: while its
        array element's pod is)."""
        self._check_watches()
        return self.packed_submitted_or_running(distributor_ids, self._alive_ones)

    def _alive_ones(self, distributor_ids: list[str]) -> set[str]:
        with self._lock:
            return {did for did in distributor_ids if self._alive(did)}

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        return self.packed_queueing_errors(distributor_ids, self._queueing_errors)

    def _queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        now = time.time()
        errors: dict[str, str] = {}
        with self._lock:
            for did in distributor_ids:
                pod = self._pod_of.get(did)
                if pod is None or did in self._pod_gone or did in self._killed:
                    continue
                name = _name(pod)
                since = self._first_seen.get(name, now)
                reason = exits.queueing_error(pod, now, self.settings.unschedulable_timeout, since)
                if reason:
                    errors[did] = reason
        return errors

    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        try:
            return self.packed_exit_info(distributor_id, self._locked_exit_info)
        except Exception as exc:  # the protocol: never raise, say it is unknown
            return RemoteExitInfo.unknown(f"reading the pod's state failed: {exc}", finalized=False)

    def _locked_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        with self._lock:
            return self._exit_info(distributor_id)

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        """Jobs and pods through the API; a packed member through the channel, unless its
        whole element goes."""
        self.terminate_packed(distributor_ids, self._terminate, self._alive_one)

    def _alive_one(self, distributor_id: str) -> bool:
        with self._lock:
            return self._alive(distributor_id)

    def _terminate(self, distributor_ids: list[str]) -> None:
        """Delete the tasks' Jobs (by label, background propagation); an array step's pod
        alone, and the whole Indexed Job once every step is killed. Returns once none of their
        pods runs (or `kill_wait` passed)."""
        parsed = [(did, _parse(did)) for did in dict.fromkeys(distributor_ids)]
        wanted = [(did, p) for did, p in parsed if p is not None and self._ours(p[0])]
        if not wanted or self.api is None:
            return
        singles: list[str] = []
        steps: dict[str, list[int]] = {}
        with self._lock:
            for did, (job, index) in wanted:
                self._killed.add(did)
                if index is None:
                    singles.append(job)
                else:
                    steps.setdefault(job, []).append(index)
            whole = [job for job in steps if self._every_step_killed(job)]
            pods = [
                _name(self._pod_of[f"{job}_{index}"])
                for job, indexes in steps.items()
                if job not in whole
                for index in indexes
                if f"{job}_{index}" in self._pod_of and f"{job}_{index}" not in self._pod_gone
            ]
        self._delete_jobs([*singles, *whole])
        for pod in pods:
            self._delete_pod(pod)
        self._wait_ended([did for did, _ in wanted])

    # -- ScalableDistributor ----------------------------------------------------------------------

    def get_nodes(self) -> dict[str, NodeInfo]:
        """Schedulable nodes: allocatable cpu and memory, and what our running pods request."""
        api = self._require_api()
        answer = api.call("GET", NODES.path(None), verb="list", resource="nodes", what="nodes")
        usage: dict[str, list[float]] = {}
        with self._lock:
            for did, pod in self._pod_of.items():
                node = str((pod.get("spec") or {}).get("nodeName") or "")
                if not node or did in self._pod_gone or exits.pod_finished(pod):
                    continue
                cores, memory = _pod_requests(pod)
                entry = usage.setdefault(node, [0.0, 0.0, 0.0])
                entry[0] += cores
                entry[1] += memory
                entry[2] += 1
        nodes: dict[str, NodeInfo] = {}
        for node in answer.get("items") or []:
            name = _name(node)
            if not name or (node.get("spec") or {}).get("unschedulable"):
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            cores, memory, workers = usage.get(name, [0.0, 0.0, 0.0])
            nodes[name] = NodeInfo(
                cores_used=cores,
                memory_used=int(memory),
                cores_total=parse_quantity(allocatable.get("cpu", "0")),
                memory_total=int(parse_quantity(allocatable.get("memory", "0"))),
                requested_cores=cores,
                requested_memory=int(memory),
                workers=int(workers),
            )
        return nodes

    def node_in_use(self, node: str) -> bool:
        with self._lock:
            return any(
                (pod.get("spec") or {}).get("nodeName") == node
                and did not in self._pod_gone
                and not exits.pod_finished(pod)
                for did, pod in self._pod_of.items()
            )

    def ignore_node(self, node: str) -> None:
        """New pods get a required node anti-affinity on this node's hostname."""
        with self._lock:
            self._ignored.add(node)

    def unignore_node(self, node: str) -> None:
        with self._lock:
            self._ignored.discard(node)

    # -- submission -------------------------------------------------------------------------------

    def _create_job(
        self,
        job: str,
        command: str,
        request: ResourceRequest,
        length: int | None,
        labels: dict[str, str],
    ) -> None:
        api = self._require_api()
        with self._lock:
            ignored = sorted(self._ignored)
        manifest = manifests.build_job(
            JobRequest(
                name=job,
                run=self.run,
                argv=self.wrapper_argv(command),
                resources=request,
                completions=length,
                labels=labels,
                secret=manifests.secret_name(self.run) if self.channel_token else None,
                passed_env=self._passed_env(),
                ignored_nodes=ignored,
            ),
            self.settings,
        )
        with self._lock:
            self._submitted[job] = _Submitted(time.time(), length)
        try:
            api.call(
                "POST",
                JOBS.path(self.namespace),
                verb="create",
                resource="jobs",
                what=f"the Job {job}",
                body=manifest,
            )
        except KubeApiError as exc:
            # 409: an earlier attempt of this very call went through (the name is fresh).
            if exc.status != 409:
                with self._lock:
                    self._submitted.pop(job, None)
                raise

    def _passed_env(self) -> dict[str, str]:
        environ = {
            name: value for name, value in os.environ.items() if name not in HOST_ONLY_VARIABLES
        }
        return self.settings.passed_env(environ)

    def _put_secret(self, token: str) -> None:
        api = self._require_api()
        name = manifests.secret_name(self.run)
        body = manifests.build_secret(self.run, token)
        try:
            api.call(
                "POST",
                SECRETS.path(self.namespace),
                verb="create",
                resource="secrets",
                what=f"the Secret {name}",
                body=body,
            )
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            api.call(  # a resumed run: the Secret is there, make sure it holds this token
                "PATCH",
                SECRETS.path(self.namespace, name),
                verb="patch",
                resource="secrets",
                what=f"the Secret {name}",
                body={"data": body["data"]},
                content_type="application/merge-patch+json",
            )
        self._secret = name

    # -- the watched state ----------------------------------------------------------------------

    def _on_pod(self, pod: dict[str, Any], gone: bool) -> None:
        did = _pod_id(pod)
        if did is None:
            return
        name = _name(pod)
        self._first_seen.setdefault(name, time.time())
        current = self._pod_of.get(did)
        if current is not None and _name(current) != name and gone:
            return  # an older pod of the same index went away; the newer one counts
        self._pod_of[did] = pod
        if gone:
            self._pod_gone.add(did)
        else:
            self._pod_gone.discard(did)
        phase = exits.pod_phase(pod)
        seen = self.transitions.setdefault(did, [])
        if not seen or seen[-1] != phase:
            seen.append(phase)
        if (
            did in self._killed
            and not gone
            and not exits.deleting(pod)
            and not exits.pod_finished(pod)
        ):
            # The pod of a killed step appeared after the kill: delete it too (off the lock).
            threading.Thread(target=self._delete_pod, args=(name,), daemon=True).start()
        self._changed.notify_all()

    def _on_job(self, job: dict[str, Any], gone: bool) -> None:
        name = _name(job)
        self._job_of[name] = job
        if gone:
            self._job_gone.add(name)
        else:
            self._job_gone.discard(name)
        self._changed.notify_all()

    def _alive(self, did: str) -> bool:
        parsed = _parse(did)
        if parsed is None or did in self._killed or not self._ours(parsed[0]):
            return False
        job, index = parsed
        pod = self._pod_of.get(did)
        if pod is not None:
            # Over, or going (a pod with a deletion timestamp counts as going).
            return not (did in self._pod_gone or exits.pod_finished(pod) or exits.deleting(pod))
        found = self._job_of.get(job)
        if found is None:
            return job in self._submitted and self._in_range(job, index)
        if job in self._job_gone or _job_finished(found):
            return False
        if index is not None:
            status = found.get("status") or {}
            done = _indexes(status.get("completedIndexes")) | _indexes(status.get("failedIndexes"))
            return index not in done and index < int(
                (found.get("spec") or {}).get("completions") or 0
            )
        return True

    def _in_range(self, job: str, index: int | None) -> bool:
        length = self._submitted[job].length
        return (index is None) == (length is None) and (index is None or index < (length or 0))

    def _exit_info(self, did: str) -> RemoteExitInfo:
        parsed = _parse(did)
        if parsed is None or not self._ours(parsed[0]):
            return RemoteExitInfo.unknown(f"{did!r} is not a Kubernetes task of this run")
        job, index = parsed
        if did in self._killed:
            return exits.killed_info(did)
        found = self._job_of.get(job)
        pod = self._pod_of.get(did)
        if pod is not None:
            if exits.pod_finished(pod) or exits.terminated_state(pod) is not None:
                return exits.exit_info_of_pod(pod, found, did)
            if did in self._pod_gone:
                return RemoteExitInfo.unknown(
                    f"lost: the pod {_name(pod)} was deleted before it ended ({did})"
                )
            what = "going (being deleted)" if exits.deleting(pod) else exits.pod_phase(pod)
            return RemoteExitInfo.unknown(f"the pod {_name(pod)} is {what}", finalized=False)
        if found is not None and (job in self._job_gone or _job_finished(found)):
            return exits.job_ended_without_pod(found, did)
        if found is not None and index is not None:
            status = found.get("status") or {}
            if index in _indexes(status.get("failedIndexes")):
                return exits.job_ended_without_pod(found, did)
        if found is not None or (job in self._submitted and self._in_range(job, index)):
            return RemoteExitInfo.unknown(f"{did} has not started a pod yet", finalized=False)
        return RemoteExitInfo.unknown(f"{did} is unknown to this run's Jobs")

    def _check_watches(self) -> None:
        for informer in (self._pods, self._jobs):
            if informer is not None and informer.failure is not None:
                raise BackendError(str(informer.failure))

    # -- kills ------------------------------------------------------------------------------------

    def _ours(self, job: str) -> bool:
        return job.startswith(f"jf-{self.run}-")

    def _every_step_killed(self, job: str) -> bool:
        length = self._submitted[job].length if job in self._submitted else None
        if length is None:
            found = self._job_of.get(job)
            length = int(((found or {}).get("spec") or {}).get("completions") or 0) or None
        return length is not None and all(f"{job}_{i}" in self._killed for i in range(length))

    def _delete_jobs(self, jobs: list[str]) -> None:
        for start in range(0, len(jobs), _DELETE_CHUNK):
            chunk = jobs[start : start + _DELETE_CHUNK]
            selector = f"{self.selector},{JOB_LABEL} in ({','.join(sorted(chunk))})"
            self._delete_collection(JOBS, selector, f"the Jobs {', '.join(chunk[:3])}…")

    def _delete_collection(self, resource: Any, selector: str, what: str) -> None:
        self._require_api().call(
            "DELETE",
            resource.path(self.namespace),
            verb="deletecollection",
            resource=resource.plural,
            what=what,
            query={"labelSelector": selector},
            body=_BACKGROUND,
        )

    def _delete_pod(self, name: str) -> None:
        try:
            self._require_api().call(
                "DELETE",
                PODS.path(self.namespace, name),
                verb="delete",
                resource="pods",
                what=f"the pod {name}",
                body=_BACKGROUND,
                ok_missing=True,
            )
        except BackendError as exc:
            log.warning("deleting the pod %s failed: %s", name, exc)

    def _wait_ended(self, ids: Iterable[str]) -> None:
        """Wait until no pod of these ids runs (as the watch sees it), up to `kill_wait`."""
        jobs = {p[0] for p in map(_parse, ids) if p is not None}
        deadline = time.monotonic() + self.settings.kill_wait

        def running() -> list[str]:
            names = []
            for did, pod in self._pod_of.items():
                parsed = _parse(did)
                if parsed is None or parsed[0] not in jobs or did in self._pod_gone:
                    continue
                if did not in self._killed:
                    continue
                if not exits.pod_finished(pod):
                    names.append(_name(pod))
            return names

        with self._lock:
            while running() and time.monotonic() < deadline:
                self._changed.wait(timeout=min(_KILL_POLL * 10, self.settings.kill_wait))

    def _wait_no_pods(self) -> None:
        """After stop()'s deletions: list until no pod of the run is left (or `kill_wait`)."""
        api = self._require_api()
        deadline = time.monotonic() + self.settings.kill_wait
        delay = _KILL_POLL
        while time.monotonic() < deadline:
            answer = api.call(
                "GET",
                PODS.path(self.namespace),
                verb="list",
                resource="pods",
                what="the run's pods",
                query={"labelSelector": self.selector},
            )
            if not answer.get("items"):
                return
            time.sleep(delay)
            delay = min(1.0, delay * 2)
        log.warning(
            "pods of the run %s were still there after %s s", self.run, self.settings.kill_wait
        )

    def _require_api(self) -> KubeApi:
        if self.api is None:
            raise BackendError("The Kubernetes distributor is not started.")
        return self.api


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _parse(did: str) -> tuple[str, int | None] | None:
    """(Job name, index or None) of an id this backend hands out; None for anything else."""
    if not isinstance(did, str):
        return None
    found = _ID.fullmatch(did)
    if found is None:
        return None
    return found.group(1), (int(found.group(2)) if found.group(2) is not None else None)


def _pod_id(pod: dict[str, Any]) -> str | None:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    job = labels.get(JOB_LABEL) or next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)
    if not job:
        return None
    index = annotations.get(INDEX_KEY, labels.get(INDEX_KEY))
    if index is None:
        for env in _container_env(pod):
            if env.get("name") == "JOB_COMPLETION_INDEX" and "value" in env:
                index = env["value"]
    if index is not None and str(index).isdigit():
        return f"{job}_{int(index)}"
    return str(job)


def _container_env(pod: dict[str, Any]) -> list[dict[str, Any]]:
    containers = (pod.get("spec") or {}).get("containers") or []
    return list(containers[0].get("env") or []) if containers else []


def _job_finished(job: dict[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


def _indexes(text: object) -> set[int]:
    """A Job's `completedIndexes`/`failedIndexes` ("1,3-5,7") as a set."""
    found: set[int] = set()
    if not isinstance(text, str):
        return found
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if first.isdigit() and (not dash or last.isdigit()):
            found.update(range(int(first), int(last if dash else first) + 1))
    return found


def _command_labels(command: str) -> dict[str, str]:
    """Labels naming the task instance or array batch, from the worker-node arguments."""
    words = shlex.split(command)
    labels = {}
    for flag, label in (
        ("--task-instance-id", TASK_LABEL),
        ("--array-id", ARRAY_LABEL),
        ("--batch-number", BATCH_LABEL),
    ):
        if flag in words[:-1]:
            value = words[words.index(flag) + 1]
            if value.isdigit():
                labels[label] = value
    return labels


def _pod_requests(pod: dict[str, Any]) -> tuple[float, float]:
    cores = memory = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        cores += parse_quantity(requests.get("cpu", "0"))
        memory += parse_quantity(requests.get("memory", "0"))
    return cores, memory
