"""What the API server checks (422 Invalid with details.causes) and the defaults it fills in."""

from __future__ import annotations

import re
from typing import Any

from .store import ApiError
from .util import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    label_key_errors,
    label_value_errors,
    parse_quantity,
)

Causes = list[dict[str, str]]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
RESOURCE_NAMES = {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "pods"}
_FIELD_REF_PATHS = re.compile(
    r"^(metadata\.name|metadata\.namespace|metadata\.uid|spec\.nodeName|spec\.serviceAccountName|"
    r"status\.hostIP|status\.podIP|status\.podIPs|"
    r"metadata\.(annotations|labels)\['[^']+'\])$"
)


def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def invalid(kind: str, name: str, causes: Causes, group: str = "") -> ApiError:
    text = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
    full = f"{kind}{'.' + group if group else ''}"
    return ApiError(
        422,
        f'{full} "{name}" is invalid: {text}',
        reason="Invalid",
        details={"name": name, "group": group, "kind": kind, "causes": causes},
    )


# ---------------------------------------------------------------------------------------------
def validate_metadata(md: Any, path: str, *, name_max: int = 253, label: bool = False) -> Causes:
    causes: Causes = []
    if not isinstance(md, dict):
        return [cause(path, "Required value", "FieldValueRequired")]
    name = md.get("name")
    if not name and not md.get("generateName"):
        causes.append(
            cause(
                f"{path}.name",
                "Required value: name or generateName is required",
                "FieldValueRequired",
            )
        )
    elif name:
        pattern = DNS1123_LABEL if label else DNS1123_SUBDOMAIN
        if not isinstance(name, str) or len(name) > name_max or not pattern.match(name):
            causes.append(
                cause(
                    f"{path}.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 '
                    f"{'label' if label else 'subdomain'} must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric "
                    f"character (at most {name_max} characters)",
                )
            )
    causes += validate_labels(md.get("labels"), f"{path}.labels")
    annotations = md.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            causes.append(cause(f"{path}.annotations", "must be a map of strings"))
        else:
            for k, v in annotations.items():
                for err in label_key_errors(k):
                    causes.append(cause(f"{path}.annotations", f'Invalid value: "{k}": {err}'))
                if not isinstance(v, str):
                    causes.append(cause(f"{path}.annotations[{k}]", "must be a string"))
    return causes


def validate_labels(labels: Any, path: str) -> Causes:
    causes: Causes = []
    if labels is None:
        return causes
    if not isinstance(labels, dict):
        return [cause(path, "must be a map of strings")]
    for k, v in labels.items():
        for err in label_key_errors(k):
            causes.append(cause(path, f'Invalid value: "{k}": {err}'))
        for err in label_value_errors(v):
            causes.append(cause(f"{path}", f'Invalid value: "{v}": {err}'))
    return causes


def _quantity(value: Any, path: str, causes: Causes) -> Any:
    try:
        q = parse_quantity(value)
    except ValueError as e:
        causes.append(cause(path, f'Invalid value: "{value}": {e}'))
        return None
    if q < 0:
        causes.append(cause(path, f'Invalid value: "{value}": must be greater than or equal to 0'))
    return q


def validate_resources(res: Any, path: str) -> Causes:
    causes: Causes = []
    if res is None:
        return causes
    if not isinstance(res, dict):
        return [cause(path, "must be an object")]
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        values = res.get(part) or {}
        if not isinstance(values, dict):
            causes.append(cause(f"{path}.{part}", "must be a map"))
            continue
        parsed[part] = {}
        for name, value in values.items():
            p = f"{path}.{part}[{name}]"
            if name not in RESOURCE_NAMES and not re.match(r"^[a-z0-9.-]+/[a-z0-9.-]+$", name):
                causes.append(
                    cause(
                        p,
                        f'Invalid value: "{name}": must be a standard resource '
                        f"type or fully qualified",
                        "FieldValueNotSupported",
                    )
                )
                continue
            q = _quantity(value, p, causes)
            if q is None:
                continue
            if name == "nvidia.com/gpu" and q != int(q):
                causes.append(cause(p, f'Invalid value: "{value}": must be an integer'))
            parsed[part][name] = q
    requests, limits = parsed.get("requests", {}), parsed.get("limits", {})
    for name, q in requests.items():
        if name in limits and q > limits[name]:
            causes.append(
                cause(
                    f"{path}.requests",
                    f'Invalid value: "{res["requests"][name]}": must be less than or equal to '
                    f"{name} limit of {res['limits'][name]}",
                )
            )
        if name == "nvidia.com/gpu" and limits.get(name) != q:
            causes.append(
                cause(
                    f"{path}.requests[{name}]",
                    "Invalid value: must be equal to nvidia.com/gpu limit",
                )
            )
    return causes


def validate_env(env: Any, path: str) -> Causes:
    causes: Causes = []
    if env is None:
        return causes
    if not isinstance(env, list):
        return [cause(path, "must be a list")]
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        if not isinstance(var, dict):
            causes.append(cause(p, "must be an object"))
            continue
        name = var.get("name")
        if not name:
            causes.append(cause(f"{p}.name", "Required value", "FieldValueRequired"))
        elif not isinstance(name, str) or not _ENV_NAME.match(name):
            causes.append(
                cause(
                    f"{p}.name",
                    f'Invalid value: "{name}": a valid environment '
                    "variable name must consist of alphabetic "
                    "characters, digits, '_', '-', or '.', and must "
                    "not start with a digit",
                )
            )
        value_from = var.get("valueFrom")
        if value_from is not None:
            if var.get("value"):
                causes.append(
                    cause(
                        f"{p}.valueFrom",
                        "Invalid value: may not be specified when `value` is not empty",
                    )
                )
            if not isinstance(value_from, dict) or len(value_from) != 1:
                causes.append(
                    cause(
                        f"{p}.valueFrom",
                        "Invalid value: must specify one of: "
                        "`fieldRef`, `resourceFieldRef`, "
                        "`configMapKeyRef` or `secretKeyRef`",
                    )
                )
                continue
            ref = value_from.get("secretKeyRef")
            if ref is not None:
                for key in ("name", "key"):
                    if not isinstance(ref, dict) or not ref.get(key):
                        causes.append(
                            cause(
                                f"{p}.valueFrom.secretKeyRef.{key}",
                                "Required value",
                                "FieldValueRequired",
                            )
                        )
            field_ref = value_from.get("fieldRef")
            if field_ref is not None:
                fp = field_ref.get("fieldPath") if isinstance(field_ref, dict) else None
                if not fp:
                    causes.append(
                        cause(
                            f"{p}.valueFrom.fieldRef.fieldPath",
                            "Required value",
                            "FieldValueRequired",
                        )
                    )
                elif not _FIELD_REF_PATHS.match(fp):
                    causes.append(
                        cause(
                            f"{p}.valueFrom.fieldRef.fieldPath",
                            f'Unsupported value: "{fp}"',
                            "FieldValueNotSupported",
                        )
                    )
    return causes


def validate_container(c: Any, path: str, names: set[str]) -> Causes:
    if not isinstance(c, dict):
        return [cause(path, "must be an object")]
    causes: Causes = []
    name = c.get("name")
    if not name:
        causes.append(cause(f"{path}.name", "Required value", "FieldValueRequired"))
    elif not isinstance(name, str) or len(name) > 63 or not DNS1123_LABEL.match(name):
        causes.append(
            cause(
                f"{path}.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 label'
                " must consist of lower case alphanumeric "
                "characters or '-'",
            )
        )
    elif name in names:
        causes.append(cause(f"{path}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
    else:
        names.add(name)
    image = c.get("image")
    if not image or not isinstance(image, str) or not image.strip():
        causes.append(cause(f"{path}.image", "Required value", "FieldValueRequired"))
    for key in ("command", "args"):
        v = c.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            causes.append(cause(f"{path}.{key}", "must be a list of strings"))
    causes += validate_env(c.get("env"), f"{path}.env")
    causes += validate_resources(c.get("resources"), f"{path}.resources")
    policy = c.get("terminationMessagePolicy")
    if policy is not None and policy not in ("File", "FallbackToLogsOnError"):
        causes.append(
            cause(
                f"{path}.terminationMessagePolicy",
                f'Unsupported value: "{policy}"',
                "FieldValueNotSupported",
            )
        )
    pull = c.get("imagePullPolicy")
    if pull is not None and pull not in ("Always", "IfNotPresent", "Never"):
        causes.append(
            cause(
                f"{path}.imagePullPolicy", f'Unsupported value: "{pull}"', "FieldValueNotSupported"
            )
        )
    return causes


def validate_affinity(aff: Any, path: str) -> Causes:
    causes: Causes = []
    if not aff:
        return causes
    node = aff.get("nodeAffinity") if isinstance(aff, dict) else None
    if not node:
        return causes
    ops = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}

    def terms(ts: Any, p: str) -> None:
        for i, term in enumerate(ts or []):
            for j, e in enumerate((term or {}).get("matchExpressions") or []):
                ep = f"{p}[{i}].matchExpressions[{j}]"
                op = e.get("operator")
                if op not in ops:
                    causes.append(
                        cause(
                            f"{ep}.operator", f'Unsupported value: "{op}"', "FieldValueNotSupported"
                        )
                    )
                    continue
                vals = e.get("values") or []
                if op in ("In", "NotIn") and not vals:
                    causes.append(cause(f"{ep}.values", "Required value", "FieldValueRequired"))
                if op in ("Exists", "DoesNotExist") and vals:
                    causes.append(
                        cause(
                            f"{ep}.values",
                            "Forbidden: may not be specified when "
                            "`operator` is 'Exists' or "
                            "'DoesNotExist'",
                            "FieldValueForbidden",
                        )
                    )
                if op in ("Gt", "Lt") and (
                    len(vals) != 1 or not str(vals[0]).lstrip("-").isdigit()
                ):
                    causes.append(
                        cause(
                            f"{ep}.values",
                            "Required value: must be specified "
                            "single value when `operator` is 'Lt' "
                            "or 'Gt'",
                        )
                    )
                for err in label_key_errors(e.get("key", "")):
                    causes.append(cause(f"{ep}.key", err))

    req = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if req:
        terms(
            req.get("nodeSelectorTerms"),
            f"{path}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        )
    pref = node.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    for i, p in enumerate(pref):
        w = p.get("weight")
        if not isinstance(w, int) or not 1 <= w <= 100:
            causes.append(
                cause(
                    f"{path}.nodeAffinity.preferredDuringSchedulingIgnoredDuring"
                    f"Execution[{i}].weight",
                    "Invalid value: must be in the range 1-100",
                )
            )
        terms(
            [p.get("preference")],
            f"{path}.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference",
        )
    return causes


def validate_pod_spec(spec: Any, path: str, *, restart_policies: tuple[str, ...]) -> Causes:
    if not isinstance(spec, dict):
        return [cause(path, "Required value", "FieldValueRequired")]
    causes: Causes = []
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        causes.append(cause(f"{path}.containers", "Required value", "FieldValueRequired"))
    else:
        names: set[str] = set()
        for i, c in enumerate(containers):
            causes += validate_container(c, f"{path}.containers[{i}]", names)
    rp = spec.get("restartPolicy")
    if rp is not None and rp not in restart_policies:
        causes.append(
            cause(
                f"{path}.restartPolicy",
                f'Unsupported value: "{rp}": supported values: {", ".join(restart_policies)}',
                "FieldValueNotSupported",
            )
        )
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and (not isinstance(ads, int) or ads <= 0):
        causes.append(
            cause(
                f"{path}.activeDeadlineSeconds",
                f"Invalid value: {ads}: must be between 1 and 2147483647",
            )
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        causes.append(
            cause(f"{path}.terminationGracePeriodSeconds", "Invalid value: must be non-negative")
        )
    causes += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    causes += validate_affinity(spec.get("affinity"), f"{path}.affinity")
    for i, t in enumerate(spec.get("tolerations") or []):
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            causes.append(
                cause(
                    f"{path}.tolerations[{i}].operator",
                    f'Unsupported value: "{op}"',
                    "FieldValueNotSupported",
                )
            )
        if op == "Exists" and t.get("value"):
            causes.append(
                cause(
                    f"{path}.tolerations[{i}].operator",
                    "Invalid value: value must be empty when `operator` is 'Exists'",
                )
            )
        eff = t.get("effect")
        if eff and eff not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(
                cause(
                    f"{path}.tolerations[{i}].effect",
                    f'Unsupported value: "{eff}"',
                    "FieldValueNotSupported",
                )
            )
    node_name = spec.get("nodeName")
    if node_name and not DNS1123_SUBDOMAIN.match(str(node_name)):
        causes.append(cause(f"{path}.nodeName", f'Invalid value: "{node_name}"'))
    return causes


def validate_pod(pod: dict[str, Any]) -> None:
    causes = validate_metadata(pod.get("metadata"), "metadata")
    causes += validate_pod_spec(
        pod.get("spec"), "spec", restart_policies=("Always", "OnFailure", "Never")
    )
    if causes:
        raise invalid("Pod", (pod.get("metadata") or {}).get("name", ""), causes)


def validate_secret(secret: dict[str, Any]) -> None:
    causes = validate_metadata(secret.get("metadata"), "metadata")
    for part in ("data", "stringData"):
        values = secret.get(part)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(cause(part, "must be a map"))
            continue
        for k, v in values.items():
            if not re.match(r"^[-._a-zA-Z0-9]+$", k):
                causes.append(
                    cause(
                        f"{part}[{k}]",
                        f'Invalid value: "{k}": a valid config key '
                        "must consist of alphanumeric characters, "
                        "'-', '_' or '.'",
                    )
                )
            if not isinstance(v, str):
                causes.append(cause(f"{part}[{k}]", "must be a string"))
    if causes:
        raise invalid("Secret", (secret.get("metadata") or {}).get("name", ""), causes)


def _nonneg(spec: dict[str, Any], key: str, causes: Causes, *, positive: bool = False) -> None:
    v = spec.get(key)
    if v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < (1 if positive else 0):
        causes.append(
            cause(
                f"spec.{key}",
                f"Invalid value: {v}: must be greater than {'0' if positive else 'or equal to 0'}",
            )
        )


def validate_job(job: dict[str, Any]) -> None:
    md = job.get("metadata")
    causes = validate_metadata(md, "metadata", name_max=63, label=True)
    spec = job.get("spec")
    if not isinstance(spec, dict):
        causes.append(cause("spec", "Required value", "FieldValueRequired"))
        raise invalid("Job", (md or {}).get("name", ""), causes, "batch")
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "backoffLimitPerIndex",
        "ttlSecondsAfterFinished",
        "maxFailedIndexes",
    ):
        _nonneg(spec, key, causes)
    _nonneg(spec, "activeDeadlineSeconds", causes, positive=True)
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        causes.append(
            cause(
                "spec.completionMode",
                f'Unsupported value: "{mode}": supported values: "NonIndexed", "Indexed"',
                "FieldValueNotSupported",
            )
        )
    if mode == "Indexed" and spec.get("completions") is None:
        causes.append(
            cause(
                "spec.completions",
                "Required value: when completion mode is Indexed",
                "FieldValueRequired",
            )
        )
    if mode != "Indexed":
        for key in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(key) is not None:
                causes.append(
                    cause(f"spec.{key}", "Invalid value: requires indexed completion mode")
                )
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        causes.append(
            cause(
                "spec.maxFailedIndexes",
                "Required value: must be specified when backoffLimitPerIndex is specified",
            )
        )
    if spec.get("suspend") is not None and not isinstance(spec.get("suspend"), bool):
        causes.append(cause("spec.suspend", "must be a boolean"))
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(cause("spec.template", "Required value", "FieldValueRequired"))
    else:
        tmd = template.get("metadata") or {}
        causes += validate_labels(tmd.get("labels"), "spec.template.metadata.labels")
        tspec = template.get("spec")
        causes += validate_pod_spec(
            tspec, "spec.template.spec", restart_policies=("OnFailure", "Never")
        )
        if isinstance(tspec, dict) and tspec.get("restartPolicy") is None:
            causes.append(
                cause(
                    "spec.template.spec.restartPolicy",
                    'Required value: valid values: "OnFailure", "Never"',
                    "FieldValueRequired",
                )
            )
        if (
            spec.get("backoffLimitPerIndex") is not None
            and isinstance(tspec, dict)
            and tspec.get("restartPolicy") != "Never"
        ):
            causes.append(
                cause("spec.backoffLimitPerIndex", "Invalid value: requires restartPolicy: Never")
            )
    if causes:
        raise invalid("Job", (md or {}).get("name", ""), causes, "batch")


def validate_job_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    validate_job(new)
    causes: Causes = []
    for key in ("template", "selector", "completionMode", "backoffLimitPerIndex"):
        if old["spec"].get(key) != new["spec"].get(key):
            causes.append(cause(f"spec.{key}", "Invalid value: field is immutable"))
    if old["spec"].get("completions") != new["spec"].get("completions"):
        causes.append(cause("spec.completions", "Invalid value: field is immutable"))
    if causes:
        raise invalid("Job", new["metadata"]["name"], causes, "batch")


# ---------------------------------------------------------------------------------------------
# Defaults (what the API server's defaulting fills in).


def default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image", "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    latest = image.endswith(":latest") or not tagged
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    res = c.setdefault("resources", {})
    limits = res.get("limits") or {}
    if limits:
        requests = res.setdefault("requests", {})
        for k, v in limits.items():
            requests.setdefault(k, v)


def default_pod_spec(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for c in spec.get("containers") or []:
        default_container(c)


def default_job(job: dict[str, Any]) -> None:
    spec = job["spec"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", None)
    if spec.get("manualSelector") is None:
        spec.pop("manualSelector")
    if spec.get("backoffLimitPerIndex") is not None:
        spec.setdefault("backoffLimit", 2147483647)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    default_pod_spec(spec["template"].setdefault("spec", {}), restart_policy="Never")
