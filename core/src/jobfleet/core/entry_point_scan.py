"""Entry points read straight from the installed distributions' `entry_points.txt` files.

`importlib.metadata` costs ≈ 20 ms to import and to read every distribution; the worker-node
wrapper needs one entry point at every task start. This scan walks the `.dist-info` and
`.egg-info` folders on `sys.path` (≈ 1–2 ms) and is exact where it answers: it answers None
whenever the name is absent or claimed by two distributions, and the caller then asks the full
discovery, which decides (and reports the conflict). Standard library only, and no `typing`.
"""

from __future__ import annotations

import importlib
import os
import sys

from jobfleet.core.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = ["ScannedEntryPoint", "scan_entry_point", "scan_entry_points"]


class ScannedEntryPoint(Frozen):
    """An entry point read straight from an installed distribution's entry_points.txt."""

    _fields = ("name", "value")
    __slots__ = _fields

    name: str
    value: str

    def __init__(self, name: str, value: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def load(self) -> Any:
        """The object the value names: `module` or `module:attribute.path`."""
        module, _, attribute = self.value.partition(":")
        loaded: Any = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            loaded = getattr(loaded, part)
        return loaded


def scan_entry_point(group: str, name: str) -> ScannedEntryPoint | None:
    """The entry point `name` of `group`, when exactly one distribution declares it."""
    return scan_entry_points((group,), name)[group]


def scan_entry_points(groups: Iterable[str], name: str) -> dict[str, ScannedEntryPoint | None]:
    """The entry point `name` in each of `groups`, reading each entry_points.txt once.

    A group maps to None when no distribution declares the name in it, or when two different
    distributions do (one distribution found twice on sys.path counts once).
    """
    wanted = tuple(groups)
    claims: dict[str, dict[str, str]] = {group: {} for group in wanted}  # group -> folder -> value
    for folder in sys.path:
        try:
            entries = list(os.scandir(folder or "."))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".dist-info", ".egg-info")):
                path = os.path.join(entry.path, "entry_points.txt")
                for group, value in _entry_point_values(path, wanted, name).items():
                    claims[group][entry.name] = value
    return {group: _single(name, claims[group]) for group in wanted}


def _single(name: str, claims: Mapping[str, str]) -> ScannedEntryPoint | None:
    values = set(claims.values())
    if len(claims) != 1 and not (len(values) == 1 and _same_distribution(claims)):
        return None
    return ScannedEntryPoint(name, values.pop())


def _same_distribution(claims: Mapping[str, str]) -> bool:
    """Whether every folder is the same distribution (found twice on sys.path)."""
    return len({folder.rsplit("-", 1)[0].lower().replace("-", "_") for folder in claims}) == 1


def _entry_point_values(path: str, groups: tuple[str, ...], name: str) -> dict[str, str]:
    """`name`'s value in each `[group]` section of an entry_points.txt (an INI file)."""
    # Read raw (open, read, close: no buffered text layer) and parsed only when it mentions
    # the name: the scan reads every installed distribution's file at every task start.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return {}
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if name.encode("utf-8", "surrogateescape") not in raw:
        return {}
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return {}
    found: dict[str, str] = {}
    section = None
    for line in map(str.strip, lines):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section in groups and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            if key.strip() == name:
                found.setdefault(section, value.strip())
    return found
