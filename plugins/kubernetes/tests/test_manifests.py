"""The Kubernetes objects as built, without a cluster: placement, resources, names, the token."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from jobfleet.core.errors import SettingsError
from jobfleet.core.exit_info import ErrorState, ExitReason
from jobfleet.core.resources import ResourceRequest
from jobfleet.core.settings import resolve_settings
from jobfleet.core.wrapper import TERMINATION_LOG_STARTED, TERMINATION_LOG_VARIABLE
from jobfleet.plugins.kubernetes import exits, manifests
from jobfleet.plugins.kubernetes.manifests import JobRequest, build_job, placement
from jobfleet.plugins.kubernetes.quantity import parse_quantity
from jobfleet.plugins.kubernetes.settings import KubernetesSettings

TOKEN = "s3cr3t-channel-token-0123456789abcdef"  # noqa: S105 - a test value
SPOT = manifests.SPOT_LABELS


def job(settings: KubernetesSettings | None = None, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "jf-0123456789-kit-1-deadbeef",
        "run": "0123456789",
        "argv": ["jobfleet-worker-node", "job", "--task-instance-id", "1"],
        "resources": ResourceRequest.parse({"cores": 2, "memory": "1G", "runtime": 60}),
        "secret": manifests.secret_name("0123456789"),
    }
    values.update(changes)
    return build_job(JobRequest(**values), settings or KubernetesSettings())


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def required_expressions(spec: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = spec.get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
    found = terms.get("nodeSelectorTerms", [])
    assert len(found) <= 1, "one term: expressions of several terms would be ORed"
    return list(found[0]["matchExpressions"]) if found else []


# -- the Job and its pod ----------------------------------------------------------------------


def test_a_single_task_is_a_job_with_no_retries_and_the_wrapper_as_argv() -> None:
    manifest = job()
    assert manifest["apiVersion"] == "batch/v1"
    assert manifest["kind"] == "Job"
    assert manifest["spec"]["backoffLimit"] == 0
    assert "completionMode" not in manifest["spec"]
    spec = pod_spec(manifest)
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["command"] == ["jobfleet-worker-node", "job", "--task-instance-id", "1"]
    assert "args" not in container
    assert container["terminationMessagePath"] == "/dev/termination-log"
    env = {e["name"]: e for e in container["env"]}
    assert env[TERMINATION_LOG_VARIABLE]["value"] == "/dev/termination-log"
    assert env["JOBFLEET_KUBERNETES_JOB"]["value"] == "jf-0123456789-kit-1-deadbeef"
    assert env["JOBFLEET_KUBERNETES_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_an_array_is_one_indexed_job_with_per_index_failure() -> None:
    manifest = job(completions=1000, settings=KubernetesSettings(parallelism=50))
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 1000
    assert spec["parallelism"] == 50
    assert spec["backoffLimitPerIndex"] == 0
    assert spec["backoffLimit"] == manifests.NO_LIMIT
    env = {e["name"] for e in pod_spec(manifest)["containers"][0]["env"]}
    assert "JOBFLEET_KUBERNETES_ARRAY_JOB" in env


def test_labels_name_the_run_and_the_job_on_job_and_pods() -> None:
    manifest = job(labels={manifests.TASK_LABEL: "1"}, settings=KubernetesSettings(labels="team=a"))
    for labels in (
        manifest["metadata"]["labels"],
        manifest["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels[manifests.RUN_LABEL] == "0123456789"
        assert labels[manifests.JOB_LABEL] == manifest["metadata"]["name"]
        assert labels[manifests.TASK_LABEL] == "1"
        assert labels["team"] == "a"
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 600


def test_resources_requests_and_limits() -> None:
    request = ResourceRequest.parse(
        {"cores": 0.5, "memory": "512M", "gpus": 2, "ephemeral_storage": "10G", "runtime": 30}
    )
    manifest = job(resources=request)
    resources = pod_spec(manifest)["containers"][0]["resources"]
    assert resources["requests"] == {
        "cpu": "500m",
        "memory": str(512 << 20),
        "ephemeral-storage": str(10 << 30),
        "nvidia.com/gpu": "2",
    }
    assert resources["limits"] == {
        "memory": str(512 << 20),
        "ephemeral-storage": str(10 << 30),
        "nvidia.com/gpu": "2",
    }
    deadline = 30 + 10 + manifests.DEADLINE_SLACK
    assert pod_spec(manifest)["activeDeadlineSeconds"] == deadline
    assert manifest["spec"]["activeDeadlineSeconds"] == deadline


def test_defaults_fill_cores_and_memory() -> None:
    settings = KubernetesSettings(default_cores=2, default_memory="2G")
    manifest = job(resources=ResourceRequest.parse({}), settings=settings)
    assert pod_spec(manifest)["containers"][0]["resources"]["requests"] == {
        "cpu": "2",
        "memory": str(2 << 30),
    }
    assert "activeDeadlineSeconds" not in pod_spec(manifest)


@pytest.mark.parametrize("hint", ["Kit Task #1", "x" * 300, "---", "ÄÖÜ", ""])
def test_names_are_dns_labels_short_enough_for_indexed_pods(hint: str) -> None:
    name = manifests.job_name("0123456789", hint)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    # An Indexed Job's pod: NAME-INDEX-xxxxx, and its hostname NAME-INDEX, under 63.
    assert len(f"{name}-999999-abcde") <= 63


def test_the_run_id_is_stable_for_a_channel() -> None:
    first = manifests.run_id("http://host:1/run-3", "k")
    assert first == manifests.run_id("http://host:1/run-3", "k")
    assert first != manifests.run_id("http://host:1/run-4", "k")
    assert re.fullmatch(r"[0-9a-f]{10}", first)


# -- the token ----------------------------------------------------------------------------------


def test_the_token_is_only_in_the_secret() -> None:
    secret = manifests.build_secret("0123456789", TOKEN)
    assert secret["kind"] == "Secret"
    manifest = job(completions=3, passed_env={"JOBFLEET_CHANNEL_TOKEN": TOKEN, "OK": "1"})
    text = json.dumps(manifest)
    assert TOKEN not in text
    env = {e["name"]: e for e in pod_spec(manifest)["containers"][0]["env"]}
    assert env["JOBFLEET_CHANNEL_TOKEN"] == {
        "name": "JOBFLEET_CHANNEL_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "jf-0123456789-channel", "key": "token"}},
    }
    assert env["OK"]["value"] == "1"


def test_pass_env_copies_only_the_named_variables() -> None:
    settings = KubernetesSettings(pass_env="MY_*,OTHER")  # noqa: S106 - names, no secret
    environ = {"MY_A": "1", "MY_B": "2", "OTHER": "3", "SECRET": "x"}
    assert settings.passed_env(environ) == {"MY_A": "1", "MY_B": "2", "OTHER": "3"}


# -- placement (seed 003) -----------------------------------------------------------------------


def test_non_preemptible_work_never_lands_on_spot_nodes() -> None:
    affinity, tolerations = placement(KubernetesSettings(), preemptible=False)
    required = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = required["nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "eks.amazonaws.com/capacityType", "operator": "NotIn", "values": ["SPOT"]} in (
        expressions
    )
    assert {
        "key": "cloud.google.com/gke-preemptible",
        "operator": "NotIn",
        "values": ["true"],
    } in expressions
    assert tolerations == []


def test_preemptible_work_may_run_anywhere_and_prefers_spot() -> None:
    affinity, tolerations = placement(KubernetesSettings(), preemptible=True)
    node = affinity["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in node
    preferred = {
        e["key"]: e["values"]
        for term in node["preferredDuringSchedulingIgnoredDuringExecution"]
        for e in term["preference"]["matchExpressions"]
    }
    assert preferred == {k: [v] for k, v in SPOT.items()}
    assert tolerations == [
        {
            "key": "cloud.google.com/gke-preemptible",
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }
    ]


def test_required_desired_prohibited_labels_and_taints() -> None:
    settings = KubernetesSettings(
        required_labels="zone=a|b,gpu",
        desired_labels="disk=ssd",
        prohibited_labels="team=x,legacy",
        tolerated_taints="dedicated=batch,flaky",
    )
    manifest = job(settings=settings, ignored_nodes=["node-z"])
    spec = pod_spec(manifest)
    expressions = required_expressions(spec)
    assert {"key": "zone", "operator": "In", "values": ["a", "b"]} in expressions
    assert {"key": "gpu", "operator": "Exists"} in expressions
    assert {"key": "team", "operator": "NotIn", "values": ["x"]} in expressions
    assert {"key": "legacy", "operator": "DoesNotExist"} in expressions
    assert {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-z"]} in (
        expressions
    )
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [
        {
            "weight": 10,
            "preference": {
                "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
            },
        }
    ]
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "batch"},
        {"key": "flaky", "operator": "Exists"},
    ]


def test_preemptible_comes_from_the_task_resources() -> None:
    spec = pod_spec(job(resources=ResourceRequest.parse({"preemptible": "yes"})))
    assert spec["tolerations"][0]["key"] == "cloud.google.com/gke-preemptible"
    spec = pod_spec(job(resources=ResourceRequest.parse({})))
    assert "tolerations" not in spec


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespace", "Not_A_Namespace"),
        ("image_pull_policy", "Sometimes"),
        ("required_labels", "zone=a|"),
        ("labels", "novalue"),
        ("labels", "bad key=1"),
        ("tolerated_taints", "=x"),
        ("max_api_calls_per_second", "0"),
        ("ttl_after_finished", "-1"),
        ("default_memory", "lots"),
        ("channel_address", "ftp://x"),
        ("pass_env", "A B"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(SettingsError, match=field):
        resolve_settings(
            "kubernetes",
            KubernetesSettings,
            environ={f"JOBFLEET_KUBERNETES_{field.upper()}": value},
        )


# -- quantities and exit states -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("4", 4.0), ("500m", 0.5), ("8Gi", 8 * 2.0**30), ("1G", 1e9), ("1e3", 1000.0), ("x", 0.0)],
)
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


def pod(terminated: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "task", "state": {}}
    if terminated is not None:
        container["state"] = {"terminated": terminated}
    return {
        "metadata": {"name": "p"},
        "status": {"phase": "Failed", "containerStatuses": [container], **status},
    }


@pytest.mark.parametrize(
    ("the_pod", "state", "reason"),
    [
        (pod({"exitCode": 137, "reason": "OOMKilled"}), "Z", ExitReason.OOM),
        (pod({"exitCode": 143, "reason": "Error"}, reason="DeadlineExceeded"), "Z", "timeout"),
        (pod(None, reason="Evicted"), "U", ExitReason.PREEMPTED),
        (pod({"exitCode": 137, "reason": "Error"}, reason="NodeLost"), "U", "node_fail"),
        (pod({"exitCode": 3, "reason": "Error"}), "E", ExitReason.FAILED),
        (pod({"exitCode": 0, "reason": "Completed"}), "D", ExitReason.COMPLETED),
        (pod({"exitCode": 127, "reason": "Error"}), "F", ExitReason.LAUNCHER_ERROR),
        (pod({"exitCode": 137, "reason": "Error"}), "E", ExitReason.FAILED),
        (
            pod({"exitCode": 137, "reason": "Error", "message": TERMINATION_LOG_STARTED}),
            "U",
            ExitReason.LOST,
        ),
    ],
)
def test_pod_outcomes(the_pod: dict[str, Any], state: str, reason: str) -> None:
    info = exits.exit_info_of_pod(the_pod, None, "jf-x")
    assert info.error_state == ErrorState(state), info.error_message
    assert info.record is not None
    assert info.record.reason == reason


def test_the_termination_message_is_preferred() -> None:
    record = {
        "error_state": "E",
        "message": "failed: exit code 5",
        "exit": {"reason": "failed", "exit_code": 5},
    }
    info = exits.exit_info_of_pod(
        pod({"exitCode": 5, "reason": "Error", "message": json.dumps(record)}), None, "jf-x"
    )
    assert info.error_state is ErrorState.ERROR_RECOVERABLE
    assert info.error_message == "failed: exit code 5"
    assert info.record is not None
    assert info.record.exit_code == 5


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "IMAGEPULLBACKOFF", "CreateContainerConfigError", "invalidimagename"]
)
def test_stuck_container_reasons_are_queueing_errors_in_any_case(reason: str) -> None:
    stuck = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "task", "state": {"waiting": {"reason": reason}}}],
        },
    }
    error = exits.queueing_error(stuck, 100.0, 300.0, 100.0)
    assert error is not None
    assert error.startswith(reason)


def test_unschedulable_is_a_queueing_error_after_the_timeout() -> None:
    pending = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available",
                }
            ],
        },
    }
    assert exits.queueing_error(pending, 1000.0, 300.0, 900.0) is None
    assert "0/2 nodes" in (exits.queueing_error(pending, 1300.0, 300.0, 900.0) or "")
