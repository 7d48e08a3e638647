"""Settings of the Kubernetes backend (`--kubernetes-…`, `JOBFLEET_KUBERNETES_…`).

Lists are written as text, so that each can be given on a command line or in one variable:

- `labels`, `annotations`, `node_selector`: `key=value,key2=value2`;
- `required_labels`, `desired_labels`, `prohibited_labels`: `key=v1|v2,key2` (a key alone: any
  value; several values: any of them), as Toil's Kubernetes batch system reads them;
- `tolerated_taints`: `key=value,key2` (a key alone tolerates the taint whatever its value);
- `image_pull_secrets`, `pass_env`: `name1,name2` (`pass_env` takes shell-style patterns).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from jobfleet.core.settings import setting

PULL_POLICIES = ("Always", "IfNotPresent", "Never")

# DNS-1123 label (namespaces, secret names) and the parts of a label key and value.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_ENV_PATTERN = re.compile(r"[A-Za-z_*?\[\]!][A-Za-z0-9_*?\[\]!]*")


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str | None = setting(
        None,
        help="Namespace of the run's Jobs, pods and Secret (default: the context's, else default).",
    )
    image: str = setting(
        "jobfleet-worker-node:0.1.0",
        help="Container image with jobfleet-worker-node installed (see plugins/kubernetes/"
        "Dockerfile).",
    )
    image_pull_policy: str = setting(
        "IfNotPresent", help="When the kubelet pulls the image: Always, IfNotPresent or Never."
    )
    image_pull_secrets: str = setting(
        "", help="Secrets (names, comma-separated) holding registry credentials for the image."
    )
    worker_command: str = setting(
        "jobfleet-worker-node",
        help="The worker-node command inside the image ($JOBFLEET_WORKER_NODE wins when set).",
    )
    service_account: str | None = setting(
        None, help="Service account of the pods (default: the namespace's default)."
    )
    kubeconfig: Path | None = setting(
        None, help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)."
    )
    context: str | None = setting(None, help="Kubeconfig context (default: the current one).")
    in_cluster: bool = setting(
        False, help="Use the pod's service account (the host runs inside the cluster)."
    )
    labels: str = setting("", help="More labels on every Job and pod: key=value,key2=value2.")
    annotations: str = setting(
        "", help="More annotations on every Job and pod: key=value,key2=value2."
    )
    node_selector: str = setting(
        "", help="Node labels every pod needs, exactly: key=value,key2=value2."
    )
    required_labels: str = setting(
        "", help="Node labels required (required node affinity): key=v1|v2,key2 (any value)."
    )
    desired_labels: str = setting(
        "", help="Node labels preferred (preferred node affinity): key=v1|v2,key2."
    )
    prohibited_labels: str = setting(
        "", help="Node labels refused (required anti-affinity): key=v1|v2,key2 (any value)."
    )
    tolerated_taints: str = setting(
        "", help="Node taints the pods tolerate: key=value,key2 (any value)."
    )
    pass_env: str = setting(
        "",
        help="Host variables copied into every pod's env at submission: names or patterns "
        "(MY_*), comma-separated; the host's own variables and the channel token never are.",
    )
    ttl_after_finished: int = setting(
        600, help="Seconds a finished Job is kept before the cluster deletes it (0: at once)."
    )
    parallelism: int = setting(
        0, help="Most pods of one array running at once (the Indexed Job's parallelism); 0: all."
    )
    default_cores: float = setting(1.0, help="CPU request of tasks that ask for no cores.")
    default_memory: str = setting("1G", help="Memory request of tasks that ask for no memory.")
    max_api_calls_per_second: float = setting(
        20.0, help="Most API calls per second (a token bucket around every call)."
    )
    api_retries: int = setting(
        6, help="Retries of an API call that got 429, 5xx or no connection (with backoff)."
    )
    request_timeout: float = setting(30.0, help="Seconds one API call (not a watch) may take.")
    watch_timeout: int = setting(
        240, help="Seconds one watch request lasts before it is renewed from its resourceVersion."
    )
    relist_interval: float = setting(
        600.0, help="Seconds between full relists of the run's pods and Jobs (a safety net)."
    )
    unschedulable_timeout: float = setting(
        300.0, help="Seconds a pod may stay Unschedulable before it is a queueing error."
    )
    kill_grace: float = setting(
        10.0, help="Seconds a killed task gets between SIGTERM and SIGKILL (the pod gets 5 more)."
    )
    kill_wait: float = setting(
        60.0, help="Seconds a kill or stop() waits for the pods to be gone before giving up."
    )
    channel_address: str | None = setting(
        None,
        help="The host channel's address as pods reach it (default: the host's own URL), e.g. "
        "http://10.0.0.5:8765.",
    )

    def __post_init__(self) -> None:
        if self.namespace is not None and not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace must be a DNS-1123 label, not {self.namespace!r}")
        if not self.image.strip() or any(c.isspace() for c in self.image):
            raise ValueError(f"image must be an image reference without spaces, not {self.image!r}")
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy must be Always, IfNotPresent or Never, not "
                f"{self.image_pull_policy!r}"
            )
        for name in split_names(self.image_pull_secrets, "image_pull_secrets"):
            if not _DNS_SUBDOMAIN.fullmatch(name):
                raise ValueError(f"image_pull_secrets: {name!r} is not a Secret name")
        if not self.worker_command.strip():
            raise ValueError("worker_command must not be empty")
        if self.service_account is not None and not _DNS_SUBDOMAIN.fullmatch(self.service_account):
            raise ValueError(
                f"service_account must be a service account name, not {self.service_account!r}"
            )
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("in_cluster cannot be combined with kubeconfig or context")
        for field in ("labels", "node_selector"):
            for key, value in key_values(getattr(self, field), field).items():
                check_label(field, key, value)
        key_values(self.annotations, "annotations")
        for field in ("required_labels", "desired_labels", "prohibited_labels"):
            for key, values in label_choices(getattr(self, field), field).items():
                for choice in values or [""]:
                    check_label(field, key, choice)
        for key, taint in taints(self.tolerated_taints).items():
            check_label("tolerated_taints", key, taint or "")
        for pattern in split_names(self.pass_env, "pass_env"):
            if not _ENV_PATTERN.fullmatch(pattern):
                raise ValueError(f"pass_env: {pattern!r} is not a variable name or pattern")
        for field in ("ttl_after_finished", "parallelism", "api_retries"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be 0 or more, not {getattr(self, field)}")
        for field in (
            "default_cores",
            "max_api_calls_per_second",
            "request_timeout",
            "relist_interval",
            "kill_wait",
        ):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be positive, not {getattr(self, field)}")
        if self.watch_timeout < 1:
            raise ValueError(f"watch_timeout must be 1 or more seconds, not {self.watch_timeout}")
        for field in ("unschedulable_timeout", "kill_grace"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be 0 or more seconds, not {getattr(self, field)}")
        from jobfleet.core.resources import parse_memory

        try:
            parse_memory(self.default_memory, field="default_memory")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.channel_address is not None and not self.channel_address.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"channel_address must be an http:// or https:// URL, not {self.channel_address!r}"
            )

    def passed_env(self, environ: dict[str, str]) -> dict[str, str]:
        """The host variables `pass_env` names, from `environ`."""
        patterns = split_names(self.pass_env, "pass_env")
        return {
            name: value
            for name, value in environ.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        }


def split_names(text: str, field: str) -> list[str]:
    """`a,b , c` → ["a", "b", "c"]; empty items are refused."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{field} has an empty item in {text!r}")
    return items


def key_values(text: str, field: str) -> dict[str, str]:
    """`key=value,key2=value2` → a dict; every item needs its `=`."""
    result: dict[str, str] = {}
    for item in split_names(text, field):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{field}: {item!r} is not key=value")
        result[key.strip()] = value.strip()
    return result


def label_choices(text: str, field: str) -> dict[str, list[str]]:
    """`key=v1|v2,key2` → {"key": ["v1", "v2"], "key2": []} (no values: any value)."""
    result: dict[str, list[str]] = {}
    for item in split_names(text, field):
        key, equals, values = item.partition("=")
        key = key.strip()
        if not key:
            raise ValueError(f"{field}: {item!r} has no label key")
        choices = [value.strip() for value in values.split("|")] if equals else []
        if equals and not all(choices):
            raise ValueError(f"{field}: {item!r} has an empty value")
        result[key] = choices
    return result


def taints(text: str) -> dict[str, str | None]:
    """`key=value,key2` → {"key": "value", "key2": None} (None: any value)."""
    result: dict[str, str | None] = {}
    for item in split_names(text, "tolerated_taints"):
        key, equals, value = item.partition("=")
        if not key.strip():
            raise ValueError(f"tolerated_taints: {item!r} has no taint key")
        result[key.strip()] = value.strip() if equals else None
    return result


def check_label(field: str, key: str, value: str) -> None:
    """Refuse a label key or value Kubernetes would refuse, naming the setting."""
    prefix, slash, name = key.rpartition("/")
    if slash and not _DNS_SUBDOMAIN.fullmatch(prefix):
        raise ValueError(f"{field}: the label key {key!r} has an invalid prefix")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{field}: {key!r} is not a valid label key")
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{field}: {value!r} is not a valid label value (for {key!r})")
