"""The job controller, the TTL-after-finished controller and the garbage collector.

Pods are created from `spec.template` with the labels, annotation, owner reference and (for
Indexed Jobs) `JOB_COMPLETION_INDEX` env a real controller adds. Finished pods are accounted
once, as with Kubernetes' job-tracking finalizers but without putting the finalizer on the pod:
a pod deleted before it finished (its deletion started, or it vanished) counts as a failed
attempt of its index. Simplified: no exponential back-off before recreating failed pods, no
podFailurePolicy/successPolicy, and the terminal condition (`Complete`/`Failed`, preceded in
the same update by `SuccessCriteriaMet`/`FailureTarget`) is set as soon as the outcome is known,
not after the remaining pods are gone.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .store import ApiError
from .util import compress_indexes, new_uid, now_rfc3339, parse_time, random_suffix

if TYPE_CHECKING:
    from . import KubeEmulator

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class JobState:
    accounted: set[str] = field(default_factory=set)  # pod uids counted
    known: set[str] = field(default_factory=set)  # pod uids created and not yet counted
    index_of: dict[str, int] = field(default_factory=dict)
    ignore: set[str] = field(default_factory=set)  # pods deleted by us (suspend): not counted
    succeeded: int = 0
    failed: int = 0
    succeeded_indexes: set[int] = field(default_factory=set)
    failed_indexes: set[int] = field(default_factory=set)
    index_failures: dict[int, int] = field(default_factory=dict)
    finished_at: float | None = None


def _condition(type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _finished(job: dict[str, Any]) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c["type"]
    return None


class JobController:
    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu
        self.states: dict[str, JobState] = {}

    # -- API hooks ---------------------------------------------------------------------------
    def create_job(self, job: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        md = job["metadata"]
        uid = new_uid()
        md["uid"] = uid
        md["generation"] = 1
        spec = job["spec"]
        if spec.get("selector") is not None and not spec.get("manualSelector"):
            raise ApiError(
                422,
                f'Job.batch "{md["name"]}" is invalid: spec.selector: Invalid '
                "value: `selector` will be auto-generated",
                reason="Invalid",
                details={
                    "name": md["name"],
                    "group": "batch",
                    "kind": "Job",
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": "`selector` will be auto-generated",
                            "field": "spec.selector",
                        }
                    ],
                },
            )
        if spec.get("selector") is None:
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tmd = spec["template"].setdefault("metadata", {})
        labels = tmd.setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": md["name"],
                "controller-uid": uid,
                "job-name": md["name"],
            }
        )
        job["status"] = {}
        if dry_run:
            return job
        return self.emu.store.create("jobs", job)

    def delete_job(self, job: dict[str, Any], policy: str | None) -> dict[str, Any] | None:
        store = self.emu.store
        md = job["metadata"]
        policy = policy or "Orphan"  # batch/v1 Jobs default to orphaning their pods
        with store.lock:
            if policy == "Foreground":

                def mark(j: dict[str, Any]) -> dict[str, Any]:
                    j["metadata"].setdefault("deletionTimestamp", now_rfc3339())
                    j["metadata"].setdefault("deletionGracePeriodSeconds", 0)
                    fin = j["metadata"].setdefault("finalizers", [])
                    if "foregroundDeletion" not in fin:
                        fin.append("foregroundDeletion")
                    return j

                self.emu.wake()
                return store.mutate("jobs", md["namespace"], md["name"], mark)
            if policy == "Orphan":
                for pod in self._pods_of(md["uid"], md["namespace"]):

                    def orphan(p: dict[str, Any]) -> dict[str, Any]:
                        refs = [
                            r
                            for r in p["metadata"].get("ownerReferences") or []
                            if r.get("uid") != md["uid"]
                        ]
                        if refs:
                            p["metadata"]["ownerReferences"] = refs
                        else:
                            p["metadata"].pop("ownerReferences", None)
                        return p

                    store.mutate(
                        "pods", pod["metadata"]["namespace"], pod["metadata"]["name"], orphan
                    )
            store.remove("jobs", md["namespace"], md["name"])
            self.states.pop(md["uid"], None)
            self.emu.wake()
            return None

    def _pods_of(self, uid: str, ns: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.emu.store.list("pods", ns)
            if any(
                r.get("uid") == uid and r.get("controller")
                for r in p["metadata"].get("ownerReferences") or []
            )
        ]

    # -- the loop ----------------------------------------------------------------------------
    def tick(self) -> None:
        store = self.emu.store
        with store.lock:
            jobs = store.list("jobs")
            by_owner: dict[str, list[dict[str, Any]]] = {}
            owned_by_job: list[tuple[str, dict[str, Any]]] = []
            for p in store.list("pods"):
                for ref in p["metadata"].get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("kind") == "Job":
                        by_owner.setdefault(ref["uid"], []).append(p)
                        owned_by_job.append((ref["uid"], p))
            live = set()
            for job in jobs:
                uid = job["metadata"]["uid"]
                live.add(uid)
                self._sync(job, by_owner.get(uid, []))
            # garbage collection: pods whose controlling Job is gone
            for owner, pod in owned_by_job:
                if owner not in live and not pod["metadata"].get("deletionTimestamp"):
                    self._delete_pod(pod)
            for uid in list(self.states):
                if uid not in live:
                    del self.states[uid]

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        current = self.emu.store.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            self.emu.kubelet.delete_pod(current, None)

    def _sync(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        store = self.emu.store
        md, spec = job["metadata"], job["spec"]
        st = self.states.setdefault(md["uid"], JobState())
        now = time.time()
        if md.get("deletionTimestamp"):  # foreground deletion
            for p in pods:
                self._delete_pod(p)
            if not pods:
                store.remove("jobs", md["namespace"], md["name"])
            return
        finished = _finished(job)
        if finished:
            for p in pods:
                if (p.get("status") or {}).get("phase") not in TERMINAL:
                    self._delete_pod(p)
            self._ttl(job, st, now)
            return
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        # account finished, deleted and vanished pods, once each
        present = {p["metadata"]["uid"] for p in pods}
        for p in pods:
            puid = p["metadata"]["uid"]
            st.known.add(puid)
            if puid in st.accounted or puid in st.ignore:
                continue
            phase = (p.get("status") or {}).get("phase")
            if phase == "Succeeded":
                self._account(st, puid, p, success=True, indexed=indexed, spec=spec)
            elif phase == "Failed" or p["metadata"].get("deletionTimestamp"):
                self._account(st, puid, p, success=False, indexed=indexed, spec=spec)
        for puid in list(st.known):
            if puid not in present:
                if puid not in st.accounted and puid not in st.ignore:
                    self._account(st, puid, None, success=False, indexed=indexed, spec=spec)
                st.known.discard(puid)
        active = [
            p
            for p in pods
            if p["metadata"]["uid"] not in st.accounted
            and p["metadata"]["uid"] not in st.ignore
            and (p.get("status") or {}).get("phase") not in TERMINAL
            and not p["metadata"].get("deletionTimestamp")
        ]
        terminating = [
            p
            for p in pods
            if p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in TERMINAL
        ]
        stamp = now_rfc3339()
        status = copy.deepcopy(job.get("status") or {})
        conds = status.get("conditions") or []
        # suspend
        if spec.get("suspend"):
            for p in active:
                st.ignore.add(p["metadata"]["uid"])
                self._delete_pod(p)
            active = []
            if not any(c["type"] == "Suspended" and c["status"] == "True" for c in conds):
                conds = [c for c in conds if c["type"] != "Suspended"]
                conds.append(_condition("Suspended", "JobSuspended", "Job suspended", stamp))
                self.emu.record_event(
                    job, "Normal", "Suspended", "Job suspended", component="job-controller"
                )
            status.pop("startTime", None)
            status["conditions"] = conds
            self._write_status(job, status, st, active, terminating, pods, indexed)
            return
        if any(c["type"] == "Suspended" and c["status"] == "True" for c in conds):
            for c in conds:
                if c["type"] == "Suspended":
                    c.update(
                        status="False",
                        reason="JobResumed",
                        message="Job resumed",
                        lastProbeTime=stamp,
                        lastTransitionTime=stamp,
                    )
            self.emu.record_event(
                job, "Normal", "Resumed", "Job resumed", component="job-controller"
            )
        status.setdefault("startTime", stamp)
        # outcome
        failure: tuple[str, str] | None = None
        backoff = spec.get("backoffLimit", 6)
        restarts = sum(
            cs.get("restartCount", 0)
            for p in active
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        )
        if spec.get("backoffLimitPerIndex") is None and st.failed + restarts > backoff:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif (
            spec.get("maxFailedIndexes") is not None
            and len(st.failed_indexes) > spec["maxFailedIndexes"]
        ):
            failure = (
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        ads = spec.get("activeDeadlineSeconds")
        if failure is None and ads and now - parse_time(status["startTime"]) >= ads:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        success = False
        if failure is None:
            if indexed:
                done = len(st.succeeded_indexes) + len(st.failed_indexes)
                if done >= completions:
                    if st.failed_indexes:
                        failure = ("FailedIndexes", "Job has failed indexes")
                    else:
                        success = True
            elif completions is None:
                success = st.succeeded > 0 and not active
            else:
                success = st.succeeded >= completions
        if failure is not None:
            for p in active:
                self._delete_pod(p)
            active = []
            conds = [c for c in conds if c["type"] not in ("FailureTarget", "Failed")]
            conds.append(_condition("FailureTarget", failure[0], failure[1], stamp))
            conds.append(_condition("Failed", failure[0], failure[1], stamp))
            st.finished_at = now
            self.emu.record_event(
                job, "Warning", failure[0], failure[1], component="job-controller"
            )
        elif success:
            for p in active:
                self._delete_pod(p)
            active = []
            conds = [c for c in conds if c["type"] not in ("SuccessCriteriaMet", "Complete")]
            conds.append(
                _condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    stamp,
                )
            )
            conds.append(
                _condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    stamp,
                )
            )
            status["completionTime"] = stamp
            st.finished_at = now
            self.emu.record_event(
                job, "Normal", "Completed", "Job completed", component="job-controller"
            )
        else:
            active += self._create_pods(job, st, active, indexed)
        if conds:
            status["conditions"] = conds
        self._write_status(job, status, st, active, terminating, pods, indexed)

    def _account(
        self,
        st: JobState,
        puid: str,
        pod: dict[str, Any] | None,
        *,
        success: bool,
        indexed: bool,
        spec: dict[str, Any],
    ) -> None:
        st.accounted.add(puid)
        index = st.index_of.get(puid)
        if index is None and pod is not None and indexed:
            try:
                index = int((pod["metadata"].get("annotations") or {}).get(INDEX_KEY, ""))
            except ValueError:
                index = None
        if success:
            st.succeeded += 1
            if index is not None:
                st.succeeded_indexes.add(index)
            return
        if index is not None and index in st.succeeded_indexes:
            return
        st.failed += 1
        if index is not None:
            st.index_failures[index] = st.index_failures.get(index, 0) + 1
            limit = spec.get("backoffLimitPerIndex")
            if limit is not None and st.index_failures[index] > limit:
                st.failed_indexes.add(index)

    def _create_pods(
        self, job: dict[str, Any], st: JobState, active: list[dict[str, Any]], indexed: bool
    ) -> list[dict[str, Any]]:
        spec = job["spec"]
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        slots = parallelism - len(active)
        if slots <= 0:
            return []
        wanted: list[int | None]
        if indexed:
            busy = set()
            for p in active:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    busy.add(int(p["metadata"]["annotations"][INDEX_KEY]))
            wanted = [
                i
                for i in range(completions)
                if i not in st.succeeded_indexes and i not in st.failed_indexes and i not in busy
            ][:slots]
        elif completions is None:
            if st.succeeded > 0:
                return []
            wanted = [None] * slots
        else:
            wanted = [None] * min(slots, completions - st.succeeded - len(active))
        created = []
        for index in wanted:
            pod = self._pod_from_template(job, index)
            try:
                new = self.emu.store.create("pods", pod)
            except ApiError:
                continue
            st.known.add(new["metadata"]["uid"])
            if index is not None:
                st.index_of[new["metadata"]["uid"]] = index
            created.append(new)
            self.emu.record_event(
                job,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {new['metadata']['name']}",
                component="job-controller",
            )
        return created

    def _pod_from_template(self, job: dict[str, Any], index: int | None) -> dict[str, Any]:
        md, spec = job["metadata"], job["spec"]
        template = copy.deepcopy(spec["template"])
        tmd = template.get("metadata") or {}
        labels = dict(tmd.get("labels") or {})
        annotations = dict(tmd.get("annotations") or {})
        pod_spec = template["spec"]
        prefix = f"{md['name']}-" if index is None else f"{md['name']}-{index}-"
        if len(prefix) > 58:
            prefix = prefix[:58]
        if index is not None:
            labels[INDEX_KEY] = str(index)
            annotations[INDEX_KEY] = str(index)
            pod_spec.setdefault("hostname", f"{md['name']}-{index}"[:63].rstrip("-"))
            for c in pod_spec.get("containers") or []:
                env = [e for e in c.get("env") or [] if e.get("name") != "JOB_COMPLETION_INDEX"]
                env.append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "apiVersion": "v1",
                                "fieldPath": f"metadata.annotations['{INDEX_KEY}']",
                            }
                        },
                    }
                )
                c["env"] = env
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": prefix + random_suffix(),
                "generateName": prefix,
                "namespace": md["namespace"],
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": md["name"],
                        "uid": md["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        return self.emu.prepare_pod(pod)

    def _write_status(
        self,
        job: dict[str, Any],
        status: dict[str, Any],
        st: JobState,
        active: list[dict[str, Any]],
        terminating: list[dict[str, Any]],
        pods: list[dict[str, Any]],
        indexed: bool,
    ) -> None:
        spec = job["spec"]
        ready = sum(
            1
            for p in active
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        )
        status["active"] = len(active)
        status["ready"] = ready
        status["succeeded"] = st.succeeded
        status["failed"] = st.failed
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        for key in ("active", "succeeded", "failed"):
            if not status[key]:
                status.pop(key)
        if indexed:
            status["completedIndexes"] = compress_indexes(st.succeeded_indexes)
            if spec.get("backoffLimitPerIndex") is not None:
                status["failedIndexes"] = compress_indexes(st.failed_indexes)
        md = job["metadata"]

        def write(j: dict[str, Any]) -> dict[str, Any] | None:
            if j["metadata"]["uid"] != md["uid"]:
                return None
            j["status"] = status
            return j

        self.emu.store.mutate("jobs", md["namespace"], md["name"], write)

    def _ttl(self, job: dict[str, Any], st: JobState, now: float) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished_at = st.finished_at
        if finished_at is None:
            times = [
                parse_time(c["lastTransitionTime"])
                for c in (job.get("status") or {}).get("conditions") or []
                if c["type"] in ("Complete", "Failed")
            ]
            finished_at = st.finished_at = min(times) if times else now
        if now - finished_at >= ttl:
            self.delete_job(job, "Background")
