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
from collections.abc import Collection

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
    try:
        import psutil  # only where there is no /proc; the core does not depend on it
    except ImportError:
        return []

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
    return pids_by_tag(variable, [value]).get(value, [])


def pids_by_tag(variable: str, values: Collection[str]) -> dict[str, list[int]]:
    """The live processes tagged `variable=value`, for each of `values`, in one scan of /proc.

    Only values with a live process appear in the result. A process's tag is the first
    `variable=` entry of its environment, the one `getenv` reads. Zombies have no environment
    left, so they never match; processes of other users cannot be read and are skipped, as are
    processes that exit during the scan. Without /proc (not Linux), nothing is found.
    """
    prefix = f"{variable}=".encode()
    wanted = {prefix + value.encode(): value for value in values}
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                content = environ.read()
        except OSError:  # gone, or not ours to read
            continue
        if prefix not in content:  # most processes: one substring search, no splitting
            continue
        for item in content.split(b"\0"):
            if item.startswith(prefix):
                value = wanted.get(item)
                if value is not None:
                    found.setdefault(value, []).append(int(entry))
                break
    return found


def topmost(pids: Collection[int]) -> list[int]:
    """Those of `pids` whose parent is not one of `pids`: the roots of the trees they form.

    Reads /proc/<pid>/stat of each; a process that is gone meanwhile is left out.
    """
    members = set(pids)
    roots: list[int] = []
    for pid in pids:
        parent = _parent_pid(pid)
        if parent is not None and parent not in members:
            roots.append(pid)
    return roots


def parent_pid(pid: int) -> int | None:
    """The parent of process `pid`; None when it is gone (or /proc is missing)."""
    return _parent_pid(pid)


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            content = stat.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": the name may hold spaces and ")", so read after the last ")".
    fields = content[content.rfind(b")") + 1 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


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
