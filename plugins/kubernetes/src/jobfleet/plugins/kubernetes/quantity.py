"""Kubernetes resource quantities ("500m", "8Gi", "1e3", "129M") as numbers."""

from __future__ import annotations

import re

_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)")


def parse_quantity(value: object) -> float:
    """The quantity's value in base units (cores, bytes); 0 for what cannot be read."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = _QUANTITY.fullmatch(str(value).strip())
    if found is None or found.group(2) not in _SUFFIXES:
        return 0.0
    return float(found.group(1)) * _SUFFIXES[found.group(2)]
