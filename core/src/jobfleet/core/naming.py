"""Turning user-chosen names into names that file systems and schedulers accept.

Task names come from users and may hold anything: slashes, quotes, `$(…)`, newlines, thousands
of characters. Nothing derived from them may become a path outside its directory, a name a
scheduler rejects, or a piece of shell. Names that had to change get a short hash of the
original, so two different names never collapse into one.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILE_NAME = 255  # bytes, the limit of ext4, xfs, btrfs and most others


def safe_name(name: str, *, max_length: int = 100, allowed: re.Pattern[str] = _UNSAFE) -> str:
    """A name made only of `[A-Za-z0-9._-]`, at most `max_length` characters, never empty.

    A name that is already safe and short enough comes back unchanged. Otherwise unsafe runs
    become `_`, and a hash of the original name is appended so that the result stays unique.
    Leading dots are replaced so the result is never hidden, `.` or `..`.
    """
    if max_length < 12:
        raise ValueError("max_length must leave room for the hash suffix (at least 12)")
    cleaned = allowed.sub("_", name).lstrip(".") or "_"
    if cleaned == name and len(name) <= max_length:
        return name
    import hashlib  # only for names that had to change; the wrapper starts faster without it

    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    head = cleaned[: max_length - len(digest) - 1].rstrip("_.") or "_"
    return f"{head}-{digest}"


def safe_file_name(name: str, suffix: str = "") -> str:
    """A safe file name for `name` plus a fixed `suffix` (e.g. `.o123`), within 255 bytes."""
    safe_suffix = _UNSAFE.sub("_", suffix)
    room = min(100, _MAX_FILE_NAME - len(safe_suffix))
    return safe_name(name, max_length=max(room, 12)) + safe_suffix
