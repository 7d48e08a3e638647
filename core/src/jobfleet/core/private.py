"""Owner-only files and directories, for everything jobfleet writes that may hold a secret.

A task's `env` is in its spec and in the ledger, its output is in its logs and in the tails of
its final report: all of it is created readable and writable by its owner only (files 0600,
directories 0700), whatever the umask. A umask only ever takes permission bits away, so these
modes come out the same under 022, 002 or 000.

Kept to the standard library: the worker-node wrapper imports it around every task.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib stay off the worker-node wrapper's start path
    from pathlib import Path
    from typing import Final

FILE_MODE: Final = 0o600
"""Files: read and written by their owner only."""

DIR_MODE: Final = 0o700
"""Directories: listed and entered by their owner only."""


def make_private_dirs(path: str | os.PathLike[str]) -> Path:
    """Make the directory `path` and its missing parents, each new one 0700; return it.

    Directories that exist already keep their mode: a parent such as the user's project
    directory is not jobfleet's to change.
    """
    from pathlib import Path  # here: the wrapper's path never makes directories

    target = Path(path)
    missing: list[Path] = []
    current = target
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:  # made meanwhile by another process, as makedirs allows
            if not directory.is_dir():
                raise
    return target


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """`os.open(path, flags)` creating the file (with O_CREAT in `flags`) as 0600."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create `path` empty and 0600 unless it exists; whether it was created."""
    try:
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True
