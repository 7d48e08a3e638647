"""An opt-in timer of the wrapper's phases, for `bench/worker_overhead.py`.

With `$JOBFLEET_WORKER_NODE_PHASES` naming a file, the wrapper appends one JSON line to it as it
exits: the `time.perf_counter()` (CLOCK_MONOTONIC, comparable across processes on Linux) of each
mark. Off (the default) a mark costs one comparison. Standard library only, and only `os`.
"""

from __future__ import annotations

import os
from time import perf_counter

VARIABLE = "JOBFLEET_WORKER_NODE_PHASES"

_path = os.environ.get(VARIABLE)
_marks: list[tuple[str, float]] | None = [] if _path else None


def mark(name: str) -> None:
    """Note that the phase `name` ends now (nothing when the timer is off)."""
    if _marks is not None:
        _marks.append((name, perf_counter()))


def write() -> None:
    """Append the marks to the file `$JOBFLEET_WORKER_NODE_PHASES` names, if set."""
    if _marks is None or not _path:
        return
    import json

    line = json.dumps({"pid": os.getpid(), "marks": _marks}) + "\n"
    fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
