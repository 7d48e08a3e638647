"""Temporary directories that belong to a live process, and finding those whose owner died.

A process makes its directory with `make_owned_directory(prefix)`, which holds a lock (flock)
on the directory's `lock` file for as long as the process lives. The kernel drops a flock when
the last descriptor of it closes, so however the owner ends — SIGKILL, a crash, a power cut's
reboot — its directory's lock is free, and `abandoned_directories(pattern)` tells a dead
owner's directory from a live one's without pids (which are reused) or clocks.

The lock file is locked under a temporary name and only then renamed to `lock`, so a `lock`
file is always held while its owner lives; a directory without one (still being made, or made
by something else) is never taken for abandoned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jobfleet.core.private import open_private

LOCK_NAME: Final = "lock"


@dataclass
class OwnedDirectory:
    """A directory and the descriptor whose lock marks its owner alive."""

    path: Path
    lock_fd: int

    def release(self) -> None:
        """Give up the lock (the directory is then abandoned: remove it first)."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def make_owned_directory(prefix: str, *, parent: Path | None = None) -> OwnedDirectory:
    """A new directory (0700) in `parent` (the temp dir), locked as this process's own."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        return OwnedDirectory(path, hold_lock(path))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def hold_lock(root: Path) -> int:
    """Lock `root/lock` as held by this process for as long as the returned descriptor is open.

    Locked before it takes its name, so that no one sees the name unlocked meanwhile.
    """
    temporary = root / f".{LOCK_NAME}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = open_private(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temporary, root / LOCK_NAME)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return fd


def abandoned_directories(
    pattern: str, *, parent: Path | None = None, owner: int | None = None
) -> Iterator[Path]:
    """The directories of `parent` (the temp dir) matching `pattern` whose lock nobody holds.

    Only directories of the user id `owner`, when given; never a symbolic link, nor a
    directory without a `lock` file. Each is yielded while the caller holds its lock, so two
    sweepers never handle the same one.
    """
    for root in Path(parent or tempfile.gettempdir()).glob(pattern):
        try:
            status = root.lstat()
            if not stat.S_ISDIR(status.st_mode):  # a symbolic link is no directory of ours
                continue
            if owner is not None and status.st_uid != owner:
                continue
            fd = os.open(root / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner lives
            yield root
        finally:
            os.close(fd)


def remove_abandoned(pattern: str, *, parent: Path | None = None) -> list[Path]:
    """Remove this user's directories matching `pattern` whose owner is gone; return them."""
    removed = []
    for root in abandoned_directories(pattern, parent=parent, owner=os.getuid()):
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed
