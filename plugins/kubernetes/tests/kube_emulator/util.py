"""Small helpers shared by the emulator's modules: times, quantities, selectors, Status bodies."""

from __future__ import annotations

import re
import secrets
import string
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, `Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet (no vowels)


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# Quantities (resource.Quantity): "100m", "1.5", "512Mi", "1G", "1e3".

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(value: Any) -> Decimal:
    """The value of a Kubernetes quantity; ValueError when it is not one."""
    if isinstance(value, bool):
        raise ValueError("quantities must match the regular expression")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError("quantities must match the regular expression")
    m = _QUANTITY.match(value.strip())
    if not m or value != value.strip():
        raise ValueError(
            "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, suffix = m.group(1), m.group(2) or ""
    if number.count(".") > 1 or number in (".", "+.", "-."):
        raise ValueError("quantities must match the regular expression")
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the regex excludes this
        raise ValueError("invalid quantity") from e
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _DECIMAL[suffix]


# ---------------------------------------------------------------------------------------------
# Names and labels.

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_key_errors(key: str) -> list[str]:
    if not isinstance(key, str) or not key:
        return ["name part must be non-empty"]
    prefix, _, name = key.rpartition("/")
    errors = []
    bad_prefix = not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)
    if "/" in key and bad_prefix:
        errors.append("prefix part must be a lowercase RFC 1123 subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (at most 63 characters)"
        )
    return errors


def label_value_errors(value: Any) -> list[str]:
    if not isinstance(value, str):
        return ["label values must be strings"]
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character (at most 63)"
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Selectors.


class SelectorError(ValueError):
    pass


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$")


def parse_label_selector(text: str | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """Requirements of a label selector string: (key, operator, values)."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    if not text:
        return reqs
    for part in _split_top(text):
        m = _SET_RE.match(part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
            continue
        m = _EQ_RE.match(part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, (m.group(3),)))
            continue
        if part.startswith("!") and re.match(r"^![^\s!=(),]+$", part):
            reqs.append((part[1:], "!exists", ()))
            continue
        if re.match(r"^[^\s!=(),]+$", part):
            reqs.append((part, "exists", ()))
            continue
        raise SelectorError(f"unable to parse requirement: {part!r}")
    for key, _, values in reqs:
        if label_key_errors(key):
            raise SelectorError(f"invalid label key {key!r}")
        for v in values:
            if label_value_errors(v):
                raise SelectorError(f"invalid label value {v!r}")
    return reqs


def labels_match(reqs: list[tuple[str, str, tuple[str, ...]]], labels: dict[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if op == "=":
            if not present or labels[key] != values[0]:
                return False
        elif op == "!=":
            if present and labels[key] == values[0]:
                return False
        elif op == "in":
            if not present or labels[key] not in values:
                return False
        elif op == "notin":
            if present and labels[key] in values:
                return False
        elif op == "exists":
            if not present:
                return False
        elif op == "!exists" and present:
            return False
    return True


_FIELDS = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
    "status.phase": lambda o: o.get("status", {}).get("phase", ""),
    "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", "") or "",
    "spec.unschedulable": lambda o: str(bool(o.get("spec", {}).get("unschedulable"))).lower(),
    "involvedObject.name": lambda o: o.get("involvedObject", {}).get("name", ""),
    "involvedObject.kind": lambda o: o.get("involvedObject", {}).get("kind", ""),
    "involvedObject.uid": lambda o: o.get("involvedObject", {}).get("uid", ""),
    "reason": lambda o: o.get("reason", ""),
    "type": lambda o: o.get("type", ""),
}


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    reqs: list[tuple[str, str, str]] = []
    if not text:
        return reqs
    for part in _split_top(text):
        m = re.match(r"^([^!=\s]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        if m.group(1) not in _FIELDS:
            raise SelectorError(f'field label not supported: "{m.group(1)}"')
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def fields_match(reqs: list[tuple[str, str, str]], obj: dict[str, Any]) -> bool:
    for field, op, value in reqs:
        actual = _FIELDS[field](obj)
        if (actual == value) != (op == "="):
            return False
    return True


def label_selector_from_dict(selector: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """A metav1.LabelSelector (matchLabels, matchExpressions) as requirements."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append((k, "=", (v,)))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for e in selector.get("matchExpressions") or []:
        reqs.append((e["key"], ops[e["operator"]], tuple(e.get("values") or ())))
    return reqs


# ---------------------------------------------------------------------------------------------
# Status bodies.

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status_body(
    code: int,
    message: str,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, "InternalError"),
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def random_token() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def compress_indexes(indexes: set[int] | list[int]) -> str:
    """ "0-2,5" form of a set of completion indexes."""
    out: list[str] = []
    items = sorted(set(indexes))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)
