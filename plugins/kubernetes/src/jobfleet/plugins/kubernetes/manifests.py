"""The objects the backend creates, as plain dicts: a Job per task, an Indexed Job per array,
one Secret per run for the channel token.

Pure functions, so the manifests can be checked without a cluster: placement (node affinity,
tolerations, spot preference), resources, names and labels, and that the channel token only
ever appears in the Secret.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobfleet.core.resources import ResourceRequest, parse_memory
from jobfleet.core.wrapper import (
    CHANNEL_TOKEN_VARIABLE,
    HOST_ONLY_VARIABLES,
    TERMINATION_LOG_VARIABLE,
)
from jobfleet.plugins.kubernetes.settings import (
    KubernetesSettings,
    key_values,
    label_choices,
    split_names,
    taints,
)

RUN_LABEL = "jobfleet.io/run"
JOB_LABEL = "jobfleet.io/job"
ARRAY_LABEL = "jobfleet.io/array"
TASK_LABEL = "jobfleet.io/task-instance"
BATCH_LABEL = "jobfleet.io/batch"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
HOSTNAME_LABEL = "kubernetes.io/hostname"

CONTAINER = "task"
TERMINATION_PATH = "/dev/termination-log"
TOKEN_KEY = "token"  # noqa: S105 - the key in the Secret, not a secret

# Environment of the pods (besides the channel token and the termination log).
JOB_VARIABLE = "JOBFLEET_KUBERNETES_JOB"
ARRAY_JOB_VARIABLE = "JOBFLEET_KUBERNETES_ARRAY_JOB"
POD_VARIABLE = "JOBFLEET_KUBERNETES_POD"
NODE_VARIABLE = "JOBFLEET_KUBERNETES_NODE"

# Spot / preemptible capacity as EKS and GKE mark it (seed 003: Toil understands both).
SPOT_LABELS: Mapping[str, str] = {
    "eks.amazonaws.com/capacityType": "SPOT",
    "cloud.google.com/gke-preemptible": "true",
}
PREEMPTIBLE_TAINT = ("cloud.google.com/gke-preemptible", "true")

GPU_RESOURCE = "nvidia.com/gpu"
DEADLINE_SLACK = 60  # seconds past the task's runtime before Kubernetes ends the pod itself
NO_LIMIT = 2_147_483_647  # Kubernetes' own "unlimited" backoffLimit with backoffLimitPerIndex

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def run_id(host_url: str | None, cluster_name: str) -> str:
    """A short, stable id of the run (its channel): a resumed host finds its objects by it."""
    return hashlib.sha256((host_url or cluster_name).encode()).hexdigest()[:10]


def dns_label(text: str, limit: int = 63) -> str:
    """`text` as a DNS-1123 label fragment (lower case, digits, dashes), at most `limit` chars."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")[:limit].strip("-")


def job_name(run: str, hint: str) -> str:
    """A fresh Job name: `jf-RUN-HINT-RANDOM`, a DNS-1123 label well under 63 characters (an
    Indexed Job's pods add `-INDEX-xxxxx`)."""
    part = dns_label(hint, 16)
    middle = f"-{part}" if part else ""
    return f"jf-{run}{middle}-{secrets.token_hex(4)}"


def secret_name(run: str) -> str:
    return f"jf-{run}-channel"


def run_selector(run: str) -> str:
    return f"{RUN_LABEL}={run}"


@dataclass(frozen=True)
class JobRequest:
    """What one Job carries besides the settings."""

    name: str
    run: str
    argv: Sequence[str]
    resources: ResourceRequest
    completions: int | None = None
    """None for a single task's Job; the array's length for an Indexed Job."""
    labels: Mapping[str, str] = field(default_factory=dict)
    secret: str | None = None
    passed_env: Mapping[str, str] = field(default_factory=dict)
    ignored_nodes: Sequence[str] = ()


def build_secret(run: str, token: str) -> dict[str, Any]:
    """The run's one Secret: the channel token that pods read through `secretKeyRef`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(run), "labels": {RUN_LABEL: run}},
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def build_job(request: JobRequest, settings: KubernetesSettings) -> dict[str, Any]:
    """The Job of one task (or the Indexed Job of an array)."""
    labels = {
        **key_values(settings.labels, "labels"),
        **request.labels,
        RUN_LABEL: request.run,
        JOB_LABEL: request.name,
    }
    annotations = key_values(settings.annotations, "annotations")
    runtime = request.resources.runtime
    pod_spec = _pod_spec(request, settings)
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
            "spec": pod_spec,
        },
        "ttlSecondsAfterFinished": settings.ttl_after_finished,
    }
    if request.completions is None:
        spec["backoffLimit"] = 0  # retries belong to the host
        spec["completions"] = 1
        spec["parallelism"] = 1
        if runtime is not None:
            spec["activeDeadlineSeconds"] = _deadline(runtime, settings)
    else:
        spec["completionMode"] = "Indexed"
        spec["completions"] = request.completions
        spec["parallelism"] = min(request.completions, settings.parallelism or request.completions)
        spec["backoffLimitPerIndex"] = 0  # an index's failure is final: the host retries
        spec["backoffLimit"] = NO_LIMIT  # …and never ends the other indexes
    metadata: dict[str, Any] = {"name": request.name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _deadline(runtime: int, settings: KubernetesSettings) -> int:
    """Kubernetes' own deadline: the wrapper's runtime limit bites first (and reports it)."""
    return runtime + math.ceil(settings.kill_grace) + DEADLINE_SLACK


def _pod_spec(request: JobRequest, settings: KubernetesSettings) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(request.argv),
        "env": _env(request),
        "resources": resources(request.resources, settings),
        "terminationMessagePath": TERMINATION_PATH,
        "terminationMessagePolicy": "File",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "terminationGracePeriodSeconds": math.ceil(settings.kill_grace) + 5,
        "automountServiceAccountToken": False,  # the task has no business with the API
        "enableServiceLinks": False,
    }
    if request.resources.runtime is not None:
        spec["activeDeadlineSeconds"] = _deadline(request.resources.runtime, settings)
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    pull_secrets = split_names(settings.image_pull_secrets, "image_pull_secrets")
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    selector = key_values(settings.node_selector, "node_selector")
    if selector:
        spec["nodeSelector"] = selector
    affinity, tolerations = placement(
        settings, preemptible=request.resources.preemptible, ignored=request.ignored_nodes
    )
    if affinity:
        spec["affinity"] = affinity
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def _env(request: JobRequest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": name, "value": value}
        for name, value in sorted(request.passed_env.items())
        if name not in HOST_ONLY_VARIABLES
    ]
    env += [
        {
            "name": JOB_VARIABLE if request.completions is None else ARRAY_JOB_VARIABLE,
            "value": request.name,
        },
        {"name": POD_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": NODE_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": TERMINATION_LOG_VARIABLE, "value": TERMINATION_PATH},
    ]
    if request.secret:
        env.append(
            {
                "name": CHANNEL_TOKEN_VARIABLE,
                "valueFrom": {"secretKeyRef": {"name": request.secret, "key": TOKEN_KEY}},
            }
        )
    return env


def resources(request: ResourceRequest, settings: KubernetesSettings) -> dict[str, Any]:
    """Requests and limits: cpu requested (not limited: throttling slows, never helps), memory
    requested and limited alike (so an overrun is an OOMKilled, Z), ephemeral storage and GPUs."""
    cores = request.cores if request.cores is not None else settings.default_cores
    memory = request.memory
    if memory is None:
        memory = parse_memory(settings.default_memory, field="default_memory")
    requests: dict[str, str] = {"cpu": cpu_quantity(cores), "memory": str(memory)}
    limits: dict[str, str] = {"memory": str(memory)}
    storage = request.extra.get("ephemeral_storage", request.extra.get("disk"))
    if storage is not None:
        size = str(parse_memory(storage, field="ephemeral_storage"))
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = size
    if request.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(request.gpus)
    return {"requests": requests, "limits": limits}


def cpu_quantity(cores: float) -> str:
    millis = max(1, math.ceil(round(cores * 1000, 6)))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def placement(
    settings: KubernetesSettings, *, preemptible: bool, ignored: Sequence[str] = ()
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Node affinity and tolerations, as seed 003 (Toil) places work.

    Required labels → `In`/`Exists`; prohibited → `NotIn`/`DoesNotExist`, both in the one
    required term (terms are ORed, expressions ANDed); desired → preferred terms. Preemptible
    work may run anywhere, prefers spot nodes (EKS capacity type, GKE preemptible label) and
    tolerates GKE's preemptible taint; other work is kept off spot nodes. Ignored nodes are
    excluded by hostname.
    """
    required: list[dict[str, Any]] = []
    for key, values in label_choices(settings.required_labels, "required_labels").items():
        required.append(_expression(key, "In", values) if values else _exists(key, True))
    for key, values in label_choices(settings.prohibited_labels, "prohibited_labels").items():
        required.append(_expression(key, "NotIn", values) if values else _exists(key, False))
    preferred: list[dict[str, Any]] = []
    for key, values in label_choices(settings.desired_labels, "desired_labels").items():
        expression = _expression(key, "In", values) if values else _exists(key, True)
        preferred.append({"weight": 10, "preference": {"matchExpressions": [expression]}})
    tolerations: list[dict[str, Any]] = []
    for key, value in taints(settings.tolerated_taints).items():
        tolerations.append(
            {"key": key, "operator": "Exists"}
            if value is None
            else {"key": key, "operator": "Equal", "value": value}
        )
    if preemptible:
        for key, value in SPOT_LABELS.items():
            preference = {"matchExpressions": [_expression(key, "In", [value])]}
            preferred.append({"weight": 1, "preference": preference})
        key, value = PREEMPTIBLE_TAINT
        tolerations.append(
            {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        )
    else:
        required += [_expression(key, "NotIn", [value]) for key, value in SPOT_LABELS.items()]
    if ignored:
        required.append(_expression(HOSTNAME_LABEL, "NotIn", sorted(ignored)))
    node_affinity: dict[str, Any] = {}
    if required:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return ({"nodeAffinity": node_affinity} if node_affinity else {}), tolerations


def _expression(key: str, operator: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def _exists(key: str, exists: bool) -> dict[str, Any]:
    return {"key": key, "operator": "Exists" if exists else "DoesNotExist"}
