"""The loopback Kubernetes API server (kube_emulator/), driven through the official client."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from kube_emulator import KubeEmulator
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

NS = "default"


# ---------------------------------------------------------------------------------------------
# helpers


def apis(emu: KubeEmulator) -> tuple[client.CoreV1Api, client.BatchV1Api]:
    api_client = emu.api_client()
    return client.CoreV1Api(api_client), client.BatchV1Api(api_client)


def container(command: str, **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", command], **extra}


def job_body(
    name: str,
    command: str,
    *,
    spec: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
    **container_extra: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {
            "backoffLimit": 0,
            **(spec or {}),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container(command, **container_extra)],
                    **(pod_spec or {}),
                }
            },
        },
    }


def pod_body(
    name: str, command: str, *, pod_spec: dict[str, Any] | None = None, **container_extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container(command, **container_extra)],
            **(pod_spec or {}),
        },
    }


def job_condition(emu: KubeEmulator, name: str) -> dict[str, Any] | None:
    for job in emu.objects("jobs"):
        if job["metadata"]["name"] == name:
            for c in (job.get("status") or {}).get("conditions") or []:
                if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                    return c
    return None


def pod(emu: KubeEmulator, name: str) -> dict[str, Any] | None:
    return next((p for p in emu.objects("pods") if p["metadata"]["name"] == name), None)


def phase(emu: KubeEmulator, name: str) -> str | None:
    p = pod(emu, name)
    return p["status"].get("phase") if p else None


def waiting_reason(emu: KubeEmulator, name: str) -> str | None:
    p = pod(emu, name)
    for cs in (p or {}).get("status", {}).get("containerStatuses") or []:
        w = cs["state"].get("waiting")
        if w:
            return w["reason"]
    return None


def raw(
    emu: KubeEmulator,
    method: str,
    path: str,
    body: Any = None,
    auth: str | None = "emulator",
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    data = (
        body
        if isinstance(body, bytes)
        else (json.dumps(body).encode() if body is not None else None)
    )
    req = urllib.request.Request(emu.url + path, data=data, method=method)  # noqa: S310 - http to loopback
    if auth is not None:
        bearer = emu.token if auth == "emulator" else auth
        req.add_header("Authorization", f"Bearer {bearer}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http to loopback
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# ---------------------------------------------------------------------------------------------
# API basics


def test_crud_through_the_typed_client(kube_emulator: KubeEmulator) -> None:
    core, batch = apis(kube_emulator)
    created = batch.create_namespaced_job(NS, job_body("crud", "true"))
    assert created.metadata.resource_version
    assert (
        created.spec.selector.match_labels["batch.kubernetes.io/controller-uid"]
        == created.metadata.uid
    )
    assert created.spec.template.metadata.labels["job-name"] == "crud"
    got = batch.read_namespaced_job("crud", NS)
    assert got.metadata.uid == created.metadata.uid
    assert [
        j.metadata.name for j in batch.list_namespaced_job(NS, label_selector="app=test").items
    ] == ["crud"]
    kube_emulator.wait_for(lambda: job_condition(kube_emulator, "crud"))
    status = batch.read_namespaced_job_status("crud", NS).status
    assert status.succeeded == 1
    assert status.completion_time is not None
    pods = core.list_namespaced_pod(NS, label_selector="job-name=crud").items
    assert len(pods) == 1
    p = pods[0]
    assert p.metadata.owner_references[0].kind == "Job"
    assert p.metadata.owner_references[0].controller is True
    cs = p.status.container_statuses[0]
    assert (cs.name, cs.ready, cs.restart_count) == ("main", False, 0)
    assert cs.image_id
    assert cs.state.terminated.exit_code == 0
    assert cs.state.terminated.reason == "Completed"
    # 409, 404
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(NS, job_body("crud", "true"))
    assert err.value.status == 409
    assert json.loads(err.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        batch.read_namespaced_job("nope", NS)
    assert err.value.status == 404
    # delete with background propagation removes the pods too
    batch.delete_namespaced_job("crud", NS, propagation_policy="Background")
    kube_emulator.wait_for(lambda: not kube_emulator.objects("pods"))
    assert not kube_emulator.objects("jobs")
    # pods directly; secrets
    core.create_namespaced_pod(NS, pod_body("solo", "echo hi"))
    kube_emulator.wait_for(lambda: phase(kube_emulator, "solo") == "Succeeded")
    assert core.read_namespaced_pod_log("solo", NS) == "hi\n"
    core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert core.read_namespaced_secret("s", NS).data == {"k": "dg=="}
    core.delete_namespaced_secret("s", NS)
    assert not core.list_namespaced_secret(NS).items
    core.delete_namespaced_pod("solo", NS)
    kube_emulator.wait_for(lambda: not kube_emulator.objects("pods"))
    assert not kube_emulator.internal_errors


def test_namespaces_nodes_and_events_read_back(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {"node-a", "node-b"}
    assert nodes["node-a"].status.allocatable["cpu"] == "4"
    assert nodes["node-b"].spec.taints[0].key == "cloud.google.com/gke-preemptible"
    assert nodes["node-b"].metadata.labels["eks.amazonaws.com/capacityType"] == "SPOT"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("elsewhere", pod_body("x", "true"))
    assert err.value.status == 404
    core.create_namespaced_pod("jobfleet", pod_body("x", "true"))
    kube_emulator.wait_for(
        lambda: (
            phase(kube_emulator, "x") is None
            and any(e["reason"] == "Started" for e in kube_emulator.objects("events", "jobfleet"))
        )
    )
    reasons = {e.reason for e in core.list_namespaced_event("jobfleet").items}
    assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons


def test_label_and_field_selectors_and_pagination(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    for i, (tier, zone) in enumerate([("a", "x"), ("b", "x"), ("c", "y"), ("a", "y")]):
        body = pod_body(f"p{i}", "true")
        body["metadata"]["labels"] = {"tier": tier, "zone": zone, **({"gpu": "1"} if i else {})}
        body["spec"]["nodeSelector"] = {"nowhere": "true"}  # stays Pending
        core.create_namespaced_pod(NS, body)

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod(NS, **kw).items)

    assert names(label_selector="tier=a") == ["p0", "p3"]
    assert names(label_selector="tier==a,zone=y") == ["p3"]
    assert names(label_selector="tier!=a") == ["p1", "p2"]
    assert names(label_selector="tier in (b, c)") == ["p1", "p2"]
    assert names(label_selector="tier notin (b,c),zone in (x)") == ["p0"]
    assert names(label_selector="gpu") == ["p1", "p2", "p3"]
    assert names(label_selector="!gpu") == ["p0"]
    assert names(field_selector="metadata.name=p2") == ["p2"]
    assert names(field_selector="status.phase=Pending") == ["p0", "p1", "p2", "p3"]
    assert names(field_selector="status.phase!=Pending") == []
    page = core.list_namespaced_pod(NS, limit=3)
    assert len(page.items) == 3
    assert page.metadata._continue
    rest = core.list_namespaced_pod(NS, limit=3, _continue=page.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["p3"]
    assert not rest.metadata._continue
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS, label_selector="tier in (a")
    assert err.value.status == 400
    core.delete_collection_namespaced_pod(NS, label_selector="zone=x", grace_period_seconds=0)
    assert names() == ["p2", "p3"]


def test_patch_of_a_job(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(
        NS, job_body("pj", "sleep 30", spec={"suspend": True, "parallelism": 1})
    )
    patched = batch.patch_namespaced_job(
        "pj", NS, {"spec": {"parallelism": 3}, "metadata": {"labels": {"extra": "1"}}}
    )
    assert patched.spec.parallelism == 3
    assert patched.metadata.labels == {"app": "test", "extra": "1"}
    removed = batch.patch_namespaced_job("pj", NS, {"metadata": {"labels": {"extra": None}}})
    assert removed.metadata.labels == {"app": "test"}
    jp = batch.patch_namespaced_job(
        "pj", NS, [{"op": "replace", "path": "/spec/parallelism", "value": 2}]
    )
    assert jp.spec.parallelism == 2
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job(
            "pj",
            NS,
            {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other"}]}}}},
        )
    assert err.value.status == 422
    assert json.loads(err.value.body)["details"]["causes"][0]["field"] == "spec.template"
    kube_emulator.wait_for(
        lambda: any(
            c["type"] == "Suspended"
            for c in kube_emulator.objects("jobs")[0]["status"].get("conditions", [])
        )
    )
    assert not kube_emulator.objects("pods")
    batch.patch_namespaced_job("pj", NS, {"spec": {"suspend": False}})
    kube_emulator.wait_for(lambda: len(kube_emulator.objects("pods")) == 2)
    batch.delete_namespaced_job("pj", NS, propagation_policy="Foreground", grace_period_seconds=0)
    kube_emulator.wait_for(lambda: not kube_emulator.objects("jobs"))
    assert not kube_emulator.objects("pods")


def test_orphan_is_the_default_propagation_for_jobs(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(NS, job_body("orph", "sleep 30"))
    kube_emulator.wait_for(lambda: kube_emulator.objects("pods"))
    batch.delete_namespaced_job("orph", NS)
    assert not kube_emulator.objects("jobs")
    time.sleep(0.3)  # the garbage collector must leave an orphan alone
    pods = kube_emulator.objects("pods")
    assert len(pods) == 1
    assert "ownerReferences" not in pods[0]["metadata"]


# ---------------------------------------------------------------------------------------------
# Jobs


@pytest.mark.slow
def test_indexed_job_runs_every_index(kube_emulator: KubeEmulator) -> None:
    core, batch = apis(kube_emulator)
    batch.create_namespaced_job(
        NS,
        job_body(
            "idx",
            "echo $JOB_COMPLETION_INDEX",
            spec={"completionMode": "Indexed", "completions": 5, "parallelism": 2},
        ),
    )
    most_active = 0

    def done() -> bool:
        nonlocal most_active
        job = kube_emulator.objects("jobs")[0]
        most_active = max(most_active, job["status"].get("active", 0))
        return job_condition(kube_emulator, "idx") is not None

    kube_emulator.wait_for(done)
    assert most_active <= 2
    status = batch.read_namespaced_job("idx", NS).status
    assert status.completed_indexes == "0-4"
    assert status.succeeded == 5
    pods = core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=idx").items
    assert len(pods) == 5
    for p in pods:
        index = p.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        assert p.metadata.labels["batch.kubernetes.io/job-completion-index"] == index
        assert p.metadata.name.startswith(f"idx-{index}-")
        assert core.read_namespaced_pod_log(p.metadata.name, NS) == f"{index}\n"


def test_failed_index_with_backoff_limit_per_index(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(
        NS,
        job_body(
            "fi",
            'test "$JOB_COMPLETION_INDEX" != 1',
            spec={
                "completionMode": "Indexed",
                "completions": 3,
                "parallelism": 3,
                "backoffLimitPerIndex": 0,
            },
        ),
    )
    cond = kube_emulator.wait_for(lambda: job_condition(kube_emulator, "fi"))
    assert (cond["type"], cond["reason"]) == ("Failed", "FailedIndexes")
    status = batch.read_namespaced_job("fi", NS).status
    assert status.failed_indexes == "1"
    assert status.completed_indexes == "0,2"
    assert (status.failed, status.succeeded) == (1, 2)
    assert len(kube_emulator.objects("pods")) == 3  # the failed index was not retried


def test_deleting_one_index_pod_fails_only_that_index(kube_emulator: KubeEmulator) -> None:
    core, batch = apis(kube_emulator)
    batch.create_namespaced_job(
        NS,
        job_body(
            "del",
            'if [ "$JOB_COMPLETION_INDEX" = 2 ]; then sleep 60; fi',
            spec={
                "completionMode": "Indexed",
                "completions": 3,
                "parallelism": 3,
                "backoffLimitPerIndex": 0,
            },
        ),
    )
    victim = kube_emulator.wait_for(
        lambda: next(
            (
                p["metadata"]["name"]
                for p in kube_emulator.objects("pods")
                if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2"
                and p["status"].get("phase") == "Running"
            ),
            None,
        )
    )
    core.delete_namespaced_pod(victim, NS)
    cond = kube_emulator.wait_for(lambda: job_condition(kube_emulator, "del"))
    assert cond["reason"] == "FailedIndexes"
    status = batch.read_namespaced_job("del", NS).status
    assert (status.failed_indexes, status.completed_indexes) == ("2", "0-1")
    kube_emulator.wait_for(lambda: pod(kube_emulator, victim) is None)
    assert len(kube_emulator.objects("pods")) == 2  # index 2 was not recreated


def test_backoff_limit_retries_then_fails(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(NS, job_body("bo", "exit 3", spec={"backoffLimit": 1}))
    cond = kube_emulator.wait_for(lambda: job_condition(kube_emulator, "bo"))
    assert cond["reason"] == "BackoffLimitExceeded"
    assert len(kube_emulator.objects("pods")) == 2
    assert batch.read_namespaced_job("bo", NS).status.failed == 2
    terminated = kube_emulator.objects("pods")[0]["status"]["containerStatuses"][0]["state"][
        "terminated"
    ]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")


def test_job_active_deadline(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(NS, job_body("dl", "sleep 60", spec={"activeDeadlineSeconds": 1}))
    cond = kube_emulator.wait_for(lambda: job_condition(kube_emulator, "dl"), timeout=15)
    assert (cond["type"], cond["reason"]) == ("Failed", "DeadlineExceeded")
    kube_emulator.wait_for(lambda: not kube_emulator.objects("pods"))


def test_pod_active_deadline(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(
        NS, pod_body("pdl", "sleep 60", pod_spec={"activeDeadlineSeconds": 1})
    )
    kube_emulator.wait_for(lambda: phase(kube_emulator, "pdl") == "Failed", timeout=15)
    p = core.read_namespaced_pod("pdl", NS)
    assert p.status.reason == "DeadlineExceeded"
    assert p.status.container_statuses[0].state.terminated.exit_code == 128 + signal.SIGTERM


def test_ttl_after_finished_deletes_job_and_pods(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)
    batch.create_namespaced_job(NS, job_body("ttl", "true", spec={"ttlSecondsAfterFinished": 1}))
    kube_emulator.wait_for(lambda: job_condition(kube_emulator, "ttl"))
    kube_emulator.wait_for(lambda: not kube_emulator.objects("jobs"), timeout=10)
    kube_emulator.wait_for(lambda: not kube_emulator.objects("pods"), timeout=10)


# ---------------------------------------------------------------------------------------------
# watch


def test_watch_events_and_bookmarks(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    kube_emulator.bookmark_interval = 0.3
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod_body("w1", "true"))
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod,
        NS,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=20,
        label_selector="app=test",
    ):
        if event["type"] == "BOOKMARK":
            seen.append(("BOOKMARK", event["raw_object"]["metadata"]["resourceVersion"]))
        else:
            seen.append((event["type"], event["object"].status.phase))
        if event["type"] == "MODIFIED" and event["object"].status.phase == "Succeeded":
            core.delete_namespaced_pod("w1", NS)
        if event["type"] == "DELETED":
            break
    w.stop()
    types = [t for t, _ in seen]
    assert types[0] == "ADDED"
    assert "MODIFIED" in types
    assert types[-1] == "DELETED"
    assert seen[-1][1] == "Succeeded"  # the last state
    # bookmarks arrive on a quiet stream
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    got = []
    for event in w.stream(
        core.list_namespaced_pod,
        NS,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        got.append(event)
        break
    w.stop()
    assert got[0]["type"] == "BOOKMARK"
    assert int(got[0]["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_watch_without_resource_version_starts_with_existing(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    nodes = [
        e["object"].metadata.name for e in watch.Watch().stream(core.list_node, timeout_seconds=1)
    ]
    assert nodes == ["node-a", "node-b"]


def test_watch_timeout_ends_cleanly(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    start = time.monotonic()
    assert (
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1
            )
        )
        == []
    )
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("as_event", [False, True])
def test_cut_watch_and_410_on_resume(kube_emulator: KubeEmulator, as_event: bool) -> None:
    _, batch = apis(kube_emulator)
    rv = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("cw", "true"))
    w = watch.Watch()
    resume = None
    stream = w.stream(batch.list_namespaced_job, NS, resource_version=rv, timeout_seconds=30)
    for event in stream:
        resume = event["object"].metadata.resource_version
        kube_emulator.cut_watches(gone=True, as_event=as_event)
    # the stream ended because the server closed it
    assert resume is not None
    with pytest.raises(ApiException) as err:
        for _ in w.stream(
            batch.list_namespaced_job, NS, resource_version=resume, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410
    # a relist gives a resourceVersion that can be watched from again
    fresh = batch.list_namespaced_job(NS).metadata.resource_version
    assert (
        list(w.stream(batch.list_namespaced_job, NS, resource_version=fresh, timeout_seconds=1))
        == []
    )
    # compact(): anything older is too old (HTTP 410)
    kube_emulator.compact()
    code, _, body = raw(
        kube_emulator,
        "GET",
        f"/apis/batch/v1/namespaces/default/jobs?watch=true&resourceVersion={rv}",
    )
    assert code == 410
    assert json.loads(body)["code"] == 410


# ---------------------------------------------------------------------------------------------
# scheduling


def test_unschedulable_pod_and_failed_scheduling_event(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(NS, pod_body("big", "true", resources={"requests": {"cpu": "100"}}))

    def unschedulable() -> dict[str, Any] | None:
        p = pod(kube_emulator, "big")
        return next(
            (
                c
                for c in p["status"].get("conditions") or []
                if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            ),
            None,
        )

    cond = kube_emulator.wait_for(unschedulable)
    assert cond["message"].startswith(
        "0/2 nodes are available: 1 Insufficient cpu, "
        "1 node(s) had untolerated taint "
        "{cloud.google.com/gke-preemptible: true}."
    )
    events = kube_emulator.wait_for(
        lambda: core.list_namespaced_event(NS, field_selector="involvedObject.name=big").items
    )
    assert events[0].reason == "FailedScheduling"
    assert events[0].involved_object.kind == "Pod"
    assert core.read_namespaced_pod("big", NS).status.phase == "Pending"
    # retried when resources appear
    kube_emulator.add_node("huge", cpu="128")
    kube_emulator.wait_for(lambda: pod(kube_emulator, "big")["spec"].get("nodeName") == "huge")


def test_resources_free_up_for_pending_pods(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    for name in ("r1", "r2"):
        core.create_namespaced_pod(
            NS,
            pod_body(
                name,
                "sleep 30",
                resources={"requests": {"memory": "6Gi"}, "limits": {"memory": "6Gi"}},
            ),
        )
    kube_emulator.wait_for(
        lambda: {phase(kube_emulator, "r1"), phase(kube_emulator, "r2")} == {"Running", "Pending"}
    )
    running = "r1" if phase(kube_emulator, "r1") == "Running" else "r2"
    other = "r2" if running == "r1" else "r1"
    assert "Insufficient memory" in next(
        c["message"]
        for c in pod(kube_emulator, other)["status"]["conditions"]
        if c["type"] == "PodScheduled"
    )
    core.delete_namespaced_pod(running, NS, grace_period_seconds=0)
    kube_emulator.wait_for(lambda: phase(kube_emulator, other) == "Running")


def test_placement_taints_selectors_and_affinity(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    spot_toleration = [
        {
            "key": "cloud.google.com/gke-preemptible",
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }
    ]
    prefer_spot = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {
                        "matchExpressions": [
                            {
                                "key": "eks.amazonaws.com/capacityType",
                                "operator": "In",
                                "values": ["SPOT"],
                            }
                        ]
                    },
                }
            ]
        }
    }
    never_spot = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "cloud.google.com/gke-preemptible", "operator": "DoesNotExist"}
                        ]
                    }
                ]
            }
        }
    }
    cases = {
        "plain": {},
        "preemptible": {"tolerations": spot_toleration, "affinity": prefer_spot},
        "on-demand": {"tolerations": spot_toleration, "affinity": never_spot},
        "selector": {
            "tolerations": spot_toleration,
            "nodeSelector": {"kubernetes.io/hostname": "node-b"},
        },
        "gt": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "rank", "operator": "Gt", "values": ["5"]}
                                ]
                            }
                        ]
                    }
                }
            }
        },
    }
    kube_emulator.add_node("node-c", labels={"rank": "7"}, taints=[])
    for name, spec in cases.items():
        core.create_namespaced_pod(NS, pod_body(name, "true", pod_spec=spec))
    nodes = kube_emulator.wait_for(
        lambda: (lambda m: m if all(m.values()) else None)(
            {n: pod(kube_emulator, n)["spec"].get("nodeName") for n in cases}
        )
    )
    assert nodes["preemptible"] == "node-b"
    assert nodes["on-demand"] in ("node-a", "node-c")
    assert nodes["selector"] == "node-b"
    assert nodes["gt"] == "node-c"
    assert nodes["plain"] in ("node-a", "node-c")


# ---------------------------------------------------------------------------------------------
# kubelet


def test_secret_key_ref_and_field_ref(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "GREETING", "value": "hi $(ME)"},
    ]
    core.create_namespaced_pod(
        NS, pod_body("env", 'echo "$TOKEN $ME $NODE $APP $GREETING"', env=env)
    )
    kube_emulator.wait_for(lambda: phase(kube_emulator, "env") == "Succeeded")
    assert core.read_namespaced_pod_log("env", NS) == "s3cret env node-a test hi env\n"
    # a missing secret or key: CreateContainerConfigError, never started
    core.create_namespaced_pod(
        NS,
        pod_body(
            "nosecret",
            "echo started",
            env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}],
        ),
    )
    core.create_namespaced_pod(
        NS,
        pod_body(
            "nokey",
            "echo started",
            env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "other"}}}],
        ),
    )
    for name in ("nosecret", "nokey"):
        kube_emulator.wait_for(
            lambda n=name: waiting_reason(kube_emulator, n) == "CreateContainerConfigError"
        )
        p = core.read_namespaced_pod(name, NS)
        assert p.status.phase == "Pending"
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod_log(name, NS)
        assert err.value.status == 400


def test_image_errors(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    kube_emulator.kubelet.pull_backoff = 0.2
    kube_emulator.fail_image_pull("registry.example/missing:1")
    core.create_namespaced_pod(NS, pod_body("pull", "true", image="registry.example/missing:1"))
    core.create_namespaced_pod(NS, pod_body("bad", "true", image="Not A Valid/Image"))
    kube_emulator.wait_for(lambda: waiting_reason(kube_emulator, "pull") == "ErrImagePull")
    kube_emulator.wait_for(lambda: waiting_reason(kube_emulator, "pull") == "ImagePullBackOff")
    kube_emulator.wait_for(lambda: waiting_reason(kube_emulator, "bad") == "InvalidImageName")
    assert phase(kube_emulator, "pull") == "Pending"
    reasons = {
        (e.reason, e.message)
        for e in core.list_namespaced_event(NS, field_selector="involvedObject.name=pull").items
    }
    assert ("Failed", "Error: ErrImagePull") in reasons
    assert ("Failed", "Error: ImagePullBackOff") in reasons


def test_termination_message(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(
        NS,
        pod_body(
            "tm",
            'echo "exit record" > "$TERM_FILE"; exit 4',
            env=[{"name": "TERM_FILE", "value": "/dev/termination-log"}],
        ),
    )
    core.create_namespaced_pod(
        NS,
        pod_body(
            "fb",
            "echo line1; echo last words; exit 1",
            terminationMessagePolicy="FallbackToLogsOnError",
        ),
    )
    for name in ("tm", "fb"):
        kube_emulator.wait_for(lambda n=name: phase(kube_emulator, n) == "Failed")
    tm = core.read_namespaced_pod("tm", NS).status.container_statuses[0].state.terminated
    assert (tm.exit_code, tm.message) == (4, "exit record\n")
    fb = core.read_namespaced_pod("fb", NS).status.container_statuses[0].state.terminated
    assert fb.message == "line1\nlast words\n"


def test_signal_exit_code(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(NS, pod_body("sig", "kill -USR1 $$"))
    kube_emulator.wait_for(lambda: phase(kube_emulator, "sig") == "Failed")
    term = core.read_namespaced_pod("sig", NS).status.container_statuses[0].state.terminated
    assert term.exit_code == 128 + signal.SIGUSR1


@pytest.mark.slow
def test_oom_killed(kube_emulator: KubeEmulator) -> None:
    if not kube_emulator.enforces_memory:
        pytest.skip("no writable cgroup v1 memory controller")
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(
        NS, pod_body("oom", "", resources={"limits": {"memory": "64Mi"}}) | {}
    )
    p = kube_emulator.objects("pods")[0]
    core.delete_namespaced_pod("oom", NS, grace_period_seconds=0)
    kube_emulator.wait_for(lambda: pod(kube_emulator, "oom") is None)
    body = pod_body("oom2", "", resources={"limits": {"memory": "64Mi"}})
    body["spec"]["containers"][0]["command"] = [
        "python3",
        "-c",
        "x = []\nwhile True: x.append(bytearray(8 << 20))",
    ]
    core.create_namespaced_pod(NS, body)
    kube_emulator.wait_for(lambda: phase(kube_emulator, "oom2") == "Failed", timeout=30)
    term = core.read_namespaced_pod("oom2", NS).status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)
    assert p["status"]["qosClass"] == "Burstable"
    assert not list(
        Path("/sys/fs/cgroup/memory").glob(f"jobfleet-kube-emulator-{os.getpid()}-*/pod-*")
    )


def test_graceful_delete_and_evict(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(NS, pod_body("stubborn", "trap '' TERM; sleep 60 & wait; sleep 60"))
    core.create_namespaced_pod(NS, pod_body("ev", "sleep 60"))
    kube_emulator.wait_for(
        lambda: (
            phase(kube_emulator, "stubborn") == "Running"
            and phase(kube_emulator, "ev") == "Running"
        )
    )
    deleting = core.delete_namespaced_pod("stubborn", NS, grace_period_seconds=1)
    assert deleting.metadata.deletion_timestamp is not None
    kube_emulator.wait_for(lambda: pod(kube_emulator, "stubborn") is None, timeout=10)
    kube_emulator.evict("ev")
    kube_emulator.wait_for(lambda: phase(kube_emulator, "ev") == "Failed")
    p = core.read_namespaced_pod("ev", NS)
    assert p.status.reason == "Evicted"
    assert any(c.type == "DisruptionTarget" for c in p.status.conditions)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    emu = KubeEmulator(tmp_path)
    try:
        core, _ = apis(emu)
        core.create_namespaced_pod(NS, pod_body("sleeper", "sleep 300 & sleep 300"))
        emu.wait_for(lambda: phase(emu, "sleeper") == "Running")
        pid = emu.kubelet.containers[pod(emu, "sleeper")["metadata"]["uid"]].proc.pid
    finally:
        emu.stop()
    assert not live_processes_in_group(pid)


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (dead, waiting for a reaper)."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


# ---------------------------------------------------------------------------------------------
# strictness and faults


def test_validation_errors(kube_emulator: KubeEmulator) -> None:
    _, batch = apis(kube_emulator)

    def fields(body: dict[str, Any]) -> set[str]:
        # raw HTTP: the typed client refuses some of these bodies itself
        code, _, answer = raw(kube_emulator, "POST", "/apis/batch/v1/namespaces/default/jobs", body)
        assert code == 422
        status = json.loads(answer)
        assert status["reason"] == "Invalid"
        return {c["field"] for c in status["details"]["causes"]}

    assert "metadata.name" in fields(job_body("Bad_Name", "true"))
    assert "metadata.name" in fields(job_body("x" * 64, "true"))
    body = job_body("v", "true")
    body["metadata"]["labels"] = {"bad key!": "v"}
    assert "metadata.labels" in fields(body)
    assert "spec.template.spec.containers[0].resources.requests[cpu]" in fields(
        job_body("v", "true", resources={"requests": {"cpu": "lots"}})
    )
    assert "spec.template.spec.containers[0].resources.requests" in fields(
        job_body(
            "v", "true", resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
        )
    )
    assert "spec.template.spec.restartPolicy" in fields(
        job_body("v", "true", pod_spec={"restartPolicy": "Always"})
    )
    assert "spec.completionMode" in fields(
        job_body("v", "true", spec={"completionMode": "Sometimes"})
    )
    assert "spec.backoffLimitPerIndex" in fields(
        job_body("v", "true", spec={"backoffLimitPerIndex": 1})
    )
    assert "spec.completions" in fields(job_body("v", "true", spec={"completionMode": "Indexed"}))
    assert "spec.parallelism" in fields(job_body("v", "true", spec={"parallelism": -1}))
    assert "spec.activeDeadlineSeconds" in fields(
        job_body("v", "true", spec={"activeDeadlineSeconds": 0})
    )
    assert "spec.template.spec.containers[0].env[0].name" in fields(
        job_body("v", "true", env=[{"name": "1BAD", "value": "x"}])
    )
    # the typed client refuses this one itself: send it raw
    code, _, body_bytes = raw(
        kube_emulator,
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        job_body("v", "true", env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s"}}}]),
    )
    assert code == 422
    assert "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key" in {
        c["field"] for c in json.loads(body_bytes)["details"]["causes"]
    }
    nameless = job_body("v", "true")
    del nameless["spec"]["template"]["spec"]["containers"][0]["name"]
    del nameless["spec"]["template"]["spec"]["containers"][0]["image"]
    assert {
        "spec.template.spec.containers[0].name",
        "spec.template.spec.containers[0].image",
    } <= fields(nameless)
    for quantity in ("100m", "1.5", "512Mi", "1G", "2e3"):
        batch.create_namespaced_job(
            NS,
            job_body(
                f"q{len(quantity)}{quantity[-1].lower()}",
                "true",
                spec={"suspend": True},
                resources={"requests": {"cpu": quantity}},
            ),
        )
    code, _, body_bytes = raw(
        kube_emulator, "POST", "/apis/batch/v1/namespaces/default/jobs", b"{not json"
    )
    assert code == 400
    assert json.loads(body_bytes)["kind"] == "Status"


def test_auth_throttle_faults_and_forbidden(kube_emulator: KubeEmulator) -> None:
    core, batch = apis(kube_emulator)
    code, _, body = raw(kube_emulator, "GET", "/api/v1/namespaces/default/pods", auth=None)
    assert code == 401
    assert json.loads(body)["reason"] == "Unauthorized"
    assert raw(kube_emulator, "GET", "/version", auth="wrong")[0] == 401
    assert raw(kube_emulator, "GET", "/version")[0] == 200
    kube_emulator.throttle(1, retry_after=3)
    code, headers, body = raw(kube_emulator, "GET", "/api/v1/namespaces/default/pods")
    assert (code, headers["Retry-After"]) == (429, "3")
    assert json.loads(body)["details"]["retryAfterSeconds"] == 3
    kube_emulator.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod(NS)
        assert err.value.status == 503
    assert core.list_namespaced_pod(NS).items == []
    kube_emulator.forbid("create", "jobs")
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(NS, job_body("f", "true"))
    assert err.value.status == 403
    assert "cannot create resource" in json.loads(err.value.body)["message"]
    kube_emulator.allow("create", "jobs")
    batch.create_namespaced_job(NS, job_body("f", "true"))
    assert kube_emulator.request_count("create", "jobs") == 2
    assert kube_emulator.requests[("list", "pods")] == 5
    kube_emulator.reset_counts()
    assert kube_emulator.request_count() == 0


def test_all_text_never_shows_the_bearer_token(kube_emulator: KubeEmulator) -> None:
    core, _ = apis(kube_emulator)
    core.create_namespaced_pod(NS, pod_body("t", "echo visible"))
    kube_emulator.wait_for(lambda: phase(kube_emulator, "t") == "Succeeded")
    text = kube_emulator.all_text()
    assert "visible" in text
    assert "GET /api/v1/namespaces/default/pods" in text or "POST /api/v1/namespaces" in text
    assert kube_emulator.token not in text
