"""Scalar resources (`cpus`, `mem`, `disk`, `gpus`) and agent attributes in Mesos' v1 JSON form.

Mesos keeps scalar values in fixed point with three decimals; so does this module, so that
`0.1 + 0.2` fits into `0.3`.
"""

from __future__ import annotations

from typing import Any

NAMES = ("cpus", "mem", "disk", "gpus")


class ResourceError(ValueError):
    pass


def fixed(value: float) -> float:
    return round(float(value) + 0.0, 3)


def empty() -> dict[str, float]:
    return dict.fromkeys(NAMES, 0.0)


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {n: fixed(a.get(n, 0.0) + b.get(n, 0.0)) for n in NAMES}


def sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {n: fixed(a.get(n, 0.0) - b.get(n, 0.0)) for n in NAMES}


def contains(outer: dict[str, float], inner: dict[str, float]) -> bool:
    return all(fixed(inner.get(n, 0.0)) <= fixed(outer.get(n, 0.0)) for n in NAMES)


def is_empty(r: dict[str, float]) -> bool:
    return all(fixed(r.get(n, 0.0)) <= 0 for n in NAMES)


def to_json(r: dict[str, float], role: str) -> list[dict[str, Any]]:
    """Unreserved resources allocated to `role`, as the master puts them into offers."""
    out = []
    for n in NAMES:
        v = fixed(r.get(n, 0.0))
        if v > 0:
            out.append(
                {
                    "name": n,
                    "type": "SCALAR",
                    "scalar": {"value": v},
                    "role": "*",
                    "allocation_info": {"role": role},
                }
            )
    return out


def parse(resources: Any, roles: set[str]) -> dict[str, float]:
    """The `Resource` list of a TaskInfo or ExecutorInfo, validated: scalars of known names,
    unreserved (role "*" or absent), allocated (when said) to one of the framework's roles."""
    if resources is None:
        return empty()
    if not isinstance(resources, list):
        raise ResourceError("'resources' must be a list of Resource")
    out = empty()
    for res in resources:
        if not isinstance(res, dict) or not isinstance(res.get("name"), str):
            raise ResourceError("a Resource needs a 'name'")
        name = res["name"]
        if name not in NAMES:
            raise ResourceError(f"resource '{name}' is not offered by any agent")
        if res.get("type", "SCALAR") != "SCALAR":
            raise ResourceError(f"resource '{name}' must be of type SCALAR")
        scalar = res.get("scalar")
        if not isinstance(scalar, dict) or not isinstance(scalar.get("value"), int | float):
            raise ResourceError(f"resource '{name}' needs 'scalar.value'")
        value = float(scalar["value"])
        if value < 0 or value != value:
            raise ResourceError(f"resource '{name}' has an invalid value {value}")
        role = res.get("role", "*")
        if role != "*" or res.get("reservations") or res.get("reservation"):
            raise ResourceError(f"resource '{name}' is reserved; only '*' resources are offered")
        alloc = (res.get("allocation_info") or {}).get("role")
        if alloc is not None and alloc not in roles:
            raise ResourceError(f"resource '{name}' is allocated to role '{alloc}'")
        out[name] = fixed(out[name] + value)
    return out


def attributes_json(attributes: dict[str, str | float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, value in attributes.items():
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, int | float):
            out.append({"name": name, "type": "SCALAR", "scalar": {"value": float(value)}})
        else:
            out.append({"name": name, "type": "TEXT", "text": {"value": str(value)}})
    return out
