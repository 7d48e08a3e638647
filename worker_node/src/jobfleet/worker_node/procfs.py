"""Reading processes from Linux's /proc, for the sampler (`sampler.py`).

Plain os.open/os.read cost a third less than open() per file. Every reader raises OSError
(FileNotFoundError, ProcessLookupError, PermissionError), ValueError or IndexError on a vanished
process or a truncated read, or catches them where a fallback exists. Only the stdlib, and
imports kept few: the wrapper pays for them before every task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = [
    "CLOCK_TICKS",
    "HAS_PROC",
    "Table",
    "peak_rss",
    "proc_table",
    "read_hwm",
    "read_io",
    "read_memory",
    "read_stat",
    "start_stack",
    "tree_table",
]

HAS_PROC = os.path.exists("/proc/self/stat")
# smaps_rollup (Linux 4.14+) is smaps summed by the kernel; without it, smaps is summed here.
_SMAPS = "smaps_rollup" if os.path.exists("/proc/self/smaps_rollup") else "smaps"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if HAS_PROC else 100  # unit of cpu times in /proc
_PAGE = os.sysconf("SC_PAGE_SIZE") if HAS_PROC else 4096  # unit of /proc/PID/statm
# Fields of smaps(_rollup) that make the memory metrics, in kB.
_SMAPS_FIELDS = frozenset({b"Pss", b"Private_Clean", b"Private_Dirty", b"Rss"})

# pid -> (parent pid, session id, start time). The start time only tells a reused pid apart.
Table = dict[int, tuple[int, int, float]]


def _read_at(name: str, folder: int, *, whole: bool = False) -> bytes:
    """A /proc/PID file, through a handle on the PID directory. Small files come in one read;
    `whole` reads to the end (smaps comes one page of mappings per read)."""
    fd = os.open(name, os.O_RDONLY, dir_fd=folder)
    try:
        if not whole:
            return os.read(fd, 16384)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_stat(folder: int) -> list[bytes]:
    """The fields of /proc/PID/stat from the state on: field N (man 5 proc) at index N - 3."""
    data = _read_at("stat", folder)
    return data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces and ")"


def start_stack(pid: int) -> int:
    """Where a process's stack starts: changed by exec, inherited by fork. 0 where unreadable."""
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        return int(read_stat(folder)[25])
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        os.close(folder)


def read_io(folder: int) -> tuple[int, int] | None:
    """Storage read_bytes, write_bytes; None where unreadable (another user's process)."""
    try:
        data = _read_at("io", folder)
        read = write = None
        for line in data.splitlines():
            if line.startswith(b"read_bytes:"):
                read = int(line[11:])
            elif line.startswith(b"write_bytes:"):
                write = int(line[12:])
    except (OSError, ValueError):
        return None
    if read is None or write is None:
        return None
    return read, write


def read_hwm(folder: int) -> int:
    """VmHWM: the process's own peak RSS, which no sampling gap can hide. Reset by exec, so a
    task never inherits the wrapper's size through it. 0 where unreadable."""
    try:
        data = _read_at("status", folder)
        at = data.find(b"\nVmHWM:")
        return int(data[at + 7 :].split(None, 1)[0]) * 1024 if at >= 0 else 0
    except (OSError, ValueError, IndexError):
        return 0


def read_memory(folder: int) -> tuple[int, int] | None:
    """The best memory figure readable for one process: PSS, else USS (private pages), else RSS,
    with its metric index; None if it vanished or has no address space any more."""
    try:
        kib = _smaps_totals(_read_at(_SMAPS, folder, whole=_SMAPS == "smaps"))
    except PermissionError:
        kib = {}  # another user's process: statm is readable by all
    except (OSError, ValueError, IndexError):
        return None  # ESRCH: exited since the stat read
    if b"Pss" in kib:
        return kib[b"Pss"] * 1024, 0
    if b"Private_Clean" in kib and b"Private_Dirty" in kib:
        return (kib[b"Private_Clean"] + kib[b"Private_Dirty"]) * 1024, 1
    if b"Rss" in kib:
        return kib[b"Rss"] * 1024, 2
    try:
        resident = int(_read_at("statm", folder).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
    return (resident, 2) if resident else None


def _smaps_totals(data: bytes) -> dict[bytes, int]:
    """The kB values of the memory fields, summed over every mapping listed (one in rollup)."""
    totals: dict[bytes, int] = {}
    for line in data.splitlines():
        name, colon, rest = line.partition(b":")
        if colon and name in _SMAPS_FIELDS:
            totals[name] = totals.get(name, 0) + int(rest.split()[0])
    return totals


def proc_table() -> Table:
    """Every process on the machine with its parent, session and start time, in one pass."""
    # One read of /proc/PID/stat per process gives all three fields (psutil would need three):
    # this scan is most of a small sample's cost (about 10 µs per process on the machine).
    table: Table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            _add_stat(table, int(name))
    return table


def tree_table(root: int, also: Iterable[int] = ()) -> Table | None:
    """`proc_table()` of `root`, its descendants and the processes `also`, without a scan of
    every process: the descendants are read from /proc/PID/task/TID/children (Linux 3.5+).

    For a root that is a child subreaper, this is every process its tree can hold: an orphan
    of the tree is adopted by the root (or by a subreaper inside it), never by init. None where
    the kernel offers no children files (the caller scans all of /proc then).
    """
    table: Table = {}
    pending = [root, *also]
    while pending:
        pid = pending.pop()
        if pid in table or not _add_stat(table, pid):
            continue
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # it exited meanwhile
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as listing:
                    pending.extend(int(child) for child in listing.read().split())
            except FileNotFoundError:
                if pid == root and tid == str(pid) and os.path.isdir(f"/proc/{pid}/task/{tid}"):
                    return None  # the thread is there, its children file is not: no such file
            except (OSError, ValueError):
                continue  # the thread exited meanwhile
    return table


def _add_stat(table: Table, pid: int) -> bool:
    """Put process `pid`'s parent, session and start time into `table`; False if it is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        # After the ")" closing the command name: state ppid pgrp session ... starttime(22)
        fields = data[data.rindex(b")") + 2 :].split()
        table[pid] = (int(fields[1]), int(fields[3]), float(fields[19]))
    except (OSError, ValueError, IndexError):
        return False  # exited during the scan
    return True


def peak_rss(pid: int) -> int:
    """VmHWM by path, for systems with a /proc but no sampler reading it (0 elsewhere)."""
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        return read_hwm(folder)
    finally:
        os.close(folder)
