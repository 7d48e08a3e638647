"""Keeping hold of every process a task starts, and ending them all.

A task may start children that change their process group or session, or orphan themselves
(double fork). The wrapper makes itself a *child subreaper* (Linux), so such orphans are
re-parented to the wrapper instead of init: they stay its descendants, can be found and
killed, and their resource usage is collected when the wrapper reaps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt the task's orphans; False where the system cannot (not Linux, old kernel)."""
    try:
        # The interpreter is linked against libc, so its own symbols include prctl; looking
        # libc up by name (ctypes.util.find_library) would run ldconfig on every task.
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to a whole process group; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def descendant_pids(root: int | None = None) -> list[int]:
    """Every live descendant of `root` (this process by default), whatever group or session
    it moved to.

    Read from /proc/<pid>/task/<tid>/children (Linux 3.5+), which costs a few reads, not a
    scan of every process on the node; psutil is the fallback where that file is missing.
    """
    top = os.getpid() if root is None else root
    found: list[int] = []
    pending = [top]
    try:
        while pending:
            pid = pending.pop()
            children = _children(pid, is_root=pid == top)
            found.extend(children)
            pending.extend(children)
    except FileNotFoundError:
        return _descendants_by_psutil(top)
    return found


def _children(pid: int, *, is_root: bool) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        if is_root and pid == os.getpid():
            raise  # no /proc here at all
        return []  # it exited meanwhile
    children: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as listing:
                children.extend(int(child) for child in listing.read().split())
        except FileNotFoundError:
            if is_root and pid == os.getpid() and tid == str(pid):
                raise  # the kernel does not offer the children file
    return children


def _descendants_by_psutil(root: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return []


def pids_tagged(variable: str, value: str) -> list[int]:
    """Processes whose environment holds `variable=value` (Linux; [] without /proc).

    How a local backend finds what a dead wrapper left behind: the wrapper's task inherits
    the wrapper's environment, tag included, whatever session it moved to. Processes of other
    users cannot be read and are not returned.
    """
    tag = f"{variable}={value}".encode()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if tag in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_orphans(deadline: float) -> list[resource.struct_rusage]:
    """Reap adopted children until none is left or `deadline` (monotonic) passes.

    Only call this after the task's own process was waited for: reaping it here would take
    its exit status away from the code that needs it.
    """
    usages: list[resource.struct_rusage] = []
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return usages
        if pid:
            usages.append(usage)
        elif time.monotonic() >= deadline:
            return usages
        else:
            time.sleep(0.01)  # children we killed are still dying; nothing to wait on but time
