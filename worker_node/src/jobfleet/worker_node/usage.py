"""Measuring what a task used: memory of its whole process tree, cpu, I/O, GPU memory.

Three sources, each with a blind spot (docs/usage.md explains them):
- the task's own cgroup (`cgroup.py`) knows the true peak of the whole tree, when there is one;
- `TreeSampler` walks the tree while it runs: shared pages counted once (PSS), escaped and
  re-parented processes still followed, but peaks between two samples can be missed;
- the task's rusage (wait4, or a RUSAGE_CHILDREN delta) covers every reaped descendant's cpu,
  but its maxrss is one process's peak, floored by the wrapper's own size at fork time.
`combine()` turns them into the protocol's usage dict and says in `usage_str` which one won.

Only the stdlib on Linux, where the sampler reads everything from /proc. psutil is the fallback
where there is no /proc, imported there by the sampler thread itself (the task starts without
waiting for it); `combine()` never needs it. Imports are kept few: the wrapper pays for them
before every task.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass

# typing and types are only for the type checker: this idiom saves importing typing (contextlib
# and importlib come with dataclasses anyway).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = [
    "TreeSample",
    "TreeSampler",
    "combine",
    "current_rss",
    "gpu_usage",
    "rusage_sum",
]

# The sampler grows its interval geometrically from first_interval to max_interval: short tasks
# get dense samples, long ones cost little.
_GROWTH = 1.5
# Sampling may use this share of one core on average, after a free allowance that lets the dense
# start happen even for big trees. Reading PSS walks the page tables, about 9 ms per resident GB.
_CPU_BUDGET = 0.05
_BUDGET_ALLOWANCE = 0.1  # seconds
# Memory metrics from best to worst: PSS shares each shared page among the processes mapping it,
# USS leaves shared pages out, RSS counts them in every process.
_METRICS = ("pss", "uss", "rss")
# A fork-floored ru_maxrss is the wrapper's RSS at fork plus a little; above this it is the task.
_FORK_FLOOR_MARGIN = 1.05
# ru_maxrss is in KiB on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
# ru_inblock / ru_oublock count 512-byte blocks.
_BLOCK = 512
_HAS_PROC = os.path.exists("/proc/self/stat")
# smaps_rollup (Linux 4.14+) is smaps summed by the kernel; without it, smaps is summed here.
_SMAPS = "smaps_rollup" if os.path.exists("/proc/self/smaps_rollup") else "smaps"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if _HAS_PROC else 100  # unit of cpu times in /proc
_PAGE = os.sysconf("SC_PAGE_SIZE") if _HAS_PROC else 4096  # unit of /proc/PID/statm
_ZOMBIE_STATES = (b"Z", b"X")  # exited: cpu still readable, memory gone
_PF_FORKNOEXEC = 0x40  # in /proc/PID/stat's flags: forked, has not exec'd since
# Fields of smaps(_rollup) that make the memory metrics, in kB.
_SMAPS_FIELDS = frozenset({b"Pss", b"Private_Clean", b"Private_Dirty", b"Rss"})

# pid -> (parent pid, session id, start time). The start time only tells a reused pid apart.
_Table = dict[int, tuple[int, int, float]]
_Key = tuple[int, float]


@dataclass(frozen=True)
class TreeSample:
    """What a `TreeSampler` saw. Memory in bytes, cpu in seconds."""

    peak_bytes: int  # highest sum of per-process memory in one sample
    metric: str  # "pss", "uss" or "rss": the weakest one used in the peak sample; "none"
    peak_processes: int  # most processes alive in one sample
    samples: int
    processes_seen: int
    read_bytes: int  # storage I/O of every process seen, up to its last sample
    write_bytes: int
    cpu_user: float  # cpu of every process seen, up to its last sample
    cpu_system: float
    largest_process_peak: int  # highest VmHWM (a process's own peak RSS) seen; Linux only
    current_bytes: int  # the last sample's sum: a live view for heartbeats
    current_processes: int
    sampling_seconds: float  # what sampling cost the wrapper
    errors: int  # samples that failed as a whole (should stay 0)


class _Tracked:
    """Last-seen counters of one live process: kept so a process that vanishes between two samples
    still counts with what it had used at its last one."""

    __slots__ = ("hwm", "proc", "read_bytes", "system", "user", "write_bytes")

    def __init__(self, proc: Any = None) -> None:
        self.proc = proc  # a psutil.Process where there is no /proc, else None
        self.user = 0.0
        self.system = 0.0
        self.read_bytes = 0
        self.write_bytes = 0
        self.hwm = 0


class TreeSampler:
    """Samples the process tree rooted at `root_pid` in a daemon thread.

    Followed: the root, its descendants, every process ever seen in the tree for as long as it
    lives (a daemon that double-forks and is re-parented to init keeps being measured once seen),
    and every process in the root's session when the root leads one (catches `cmd &` orphans
    whose parent exited before any sample). Processes in `exclude_pids`, and always the calling
    process, are walked through but never measured: with a sub-reaper wrapper, pass the wrapper's
    own pid as `root_pid` and in `exclude_pids` to follow every orphan it adopts.
    """

    def __init__(
        self,
        root_pid: int,
        *,
        exclude_pids: frozenset[int] = frozenset(),
        first_interval: float = 0.02,
        max_interval: float = 1.0,
    ) -> None:
        if not 0 < first_interval <= max_interval:
            raise ValueError("need 0 < first_interval <= max_interval")
        self.root_pid = root_pid
        self.exclude_pids = exclude_pids | {os.getpid()}
        self.first_interval = first_interval
        self.max_interval = max_interval
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: TreeSample | None = None
        self._ps: ModuleType | None = None  # psutil, only where there is no /proc
        self._root_checked = False
        self._root_start: float | None = None
        self._root_leads_session = False
        self._tracked: dict[_Key, _Tracked] = {}
        self._gone = _Tracked()  # counters of processes that have vanished, summed
        self._seen = 0
        self._peak = 0
        self._peak_metric = "none"
        self._peak_processes = 0
        self._samples = 0
        self._current: tuple[int, int] | None = None  # (bytes, processes) of the last sample
        self._measured: frozenset[int] = frozenset()  # pids counted in the last sample
        self._cost = 0.0
        self._errors = 0

    # -- public ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TreeSampler already started")
        self._thread = threading.Thread(target=self._run, name="jobfleet-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> TreeSample:
        """Stop sampling, take one last sample, and return the totals (same answer if repeated).

        Cheap when the task has ended: the thread is woken from its wait, or gives up the sample
        it is taking at the next process, and the last sample is taken here at once."""
        if self._result is not None:
            return self._result
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        # The last sample updates the counters of processes that outlived the root.
        self._sample_safely()
        self._result = self.snapshot()
        return self._result

    def snapshot(self) -> TreeSample:
        """The totals so far, while sampling goes on."""
        with self._lock:
            live = list(self._tracked.values())
            every = [*live, self._gone]
            return TreeSample(
                peak_bytes=self._peak,
                metric=self._peak_metric,
                peak_processes=self._peak_processes,
                samples=self._samples,
                processes_seen=self._seen,
                read_bytes=sum(t.read_bytes for t in every),
                write_bytes=sum(t.write_bytes for t in every),
                cpu_user=sum(t.user for t in every),
                cpu_system=sum(t.system for t in every),
                largest_process_peak=max(t.hwm for t in every),
                current_bytes=self._current[0] if self._current else 0,
                current_processes=self._current[1] if self._current else 0,
                sampling_seconds=self._cost,
                errors=self._errors,
            )

    @property
    def current_bytes(self) -> int | None:
        """Memory of the tree at the last sample (None before the first): for heartbeats and
        memory guards, without building a whole snapshot."""
        current = self._current
        return current[0] if current is not None else None

    def tracked_pids(self) -> frozenset[int]:
        """Pids whose memory counted in the last sample (zombies and the excluded never do)."""
        return self._measured

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        if not _HAS_PROC:
            # Imported here, off the caller's thread and outside the sampling budget (it is a
            # one-time 10-60 ms); a failure is recorded by the first sample.
            with contextlib.suppress(Exception):
                self._ps = _import_psutil()
        began = time.monotonic()
        interval = wait = self.first_interval
        # The first sample comes after first_interval, not at once: the task is just starting,
        # and the wrapper's own thread needs the cpu (and the GIL) more than a sample of it does.
        while not self._stopping.wait(wait):  # stop() sets it: no waiting out a long interval
            self._sample_safely(abort=self._stopping)
            interval = min(interval * _GROWTH, self.max_interval)
            wait = max(interval, self._budget_wait(time.monotonic() - began))

    def _budget_wait(self, elapsed: float) -> float:
        """The wait that brings sampling back under its cpu budget (0 while under it)."""
        return (self._cost - _BUDGET_ALLOWANCE) / _CPU_BUDGET - elapsed

    def _sample_safely(self, abort: threading.Event | None = None) -> None:
        # Per-process errors are handled inside; this catches the unexpected, so that a bug or an
        # odd /proc never kills the thread and with it the measurement.
        began = time.perf_counter()
        try:
            self._sample(abort)
        except Exception:
            with self._lock:
                self._errors += 1
        with self._lock:
            self._cost += time.perf_counter() - began

    def _sample(self, abort: threading.Event | None) -> None:
        """One sample. Given up, unrecorded, as soon as `abort` is set: stop() takes its own."""
        if _HAS_PROC:
            table = _proc_table()
        else:
            if self._ps is None:
                self._ps = _import_psutil()
            table = _psutil_table(self._ps)
        if not self._root_checked:
            self._learn_root(table)
        members = self._members(table)
        total, metric, counted = 0, 0, set()
        for pid in sorted(members - self.exclude_pids):
            if abort is not None and abort.is_set():
                return
            measured = self._measure((pid, table[pid][2]))
            if measured is not None:
                total += measured[0]
                metric = max(metric, measured[1])
                counted.add(pid)
        count = len(counted)
        with self._lock:
            self._retire_vanished(table)
            self._samples += 1
            self._current = (total, count)
            self._measured = frozenset(counted)
            self._peak_processes = max(self._peak_processes, count)
            if total > self._peak:
                self._peak, self._peak_metric = total, _METRICS[metric]

    def _learn_root(self, table: _Table) -> None:
        # Only in the first sample: a root already gone by then may have had its pid reused.
        self._root_checked = True
        entry = table.get(self.root_pid)
        if entry is not None:
            self._root_start = entry[2]
            self._root_leads_session = entry[1] == self.root_pid

    def _members(self, table: _Table) -> set[int]:
        """Pids of the tree this sample: what descends from the root, from any process seen
        before, or (root leading a session) from any process in that session."""
        starts: list[int] = [pid for pid, start in self._tracked if _same(table, pid, start)]
        if self._root_start is not None:
            if _same(table, self.root_pid, self._root_start):
                starts.append(self.root_pid)
            if self._root_leads_session:
                # A later process is a member only if it started after the root: a reused pid
                # that is an old session leader's is someone else's.
                starts += [
                    pid
                    for pid, (_, sid, start) in table.items()
                    if sid == self.root_pid and start >= self._root_start
                ]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        members: set[int] = set()
        while starts:
            pid = starts.pop()
            if pid not in members:
                members.add(pid)
                starts.extend(children.get(pid, ()))
        return members

    def _track(self, key: _Key, proc: Any = None) -> _Tracked:
        tracked = self._tracked.get(key)
        if tracked is None:
            tracked = _Tracked(proc)
            with self._lock:
                self._tracked[key] = tracked
                self._seen += 1
        return tracked

    def _measure(self, key: _Key) -> tuple[int, int] | None:
        """Update one process's counters; return (memory bytes, metric index) or None if gone.

        Counters only ever grow: max() keeps the last real values when a zombie reads as zeros.
        """
        if _HAS_PROC:
            return self._measure_proc(key)
        assert self._ps is not None  # imported by _sample
        return self._measure_psutil(self._ps, key)

    def _measure_proc(self, key: _Key) -> tuple[int, int] | None:
        # Every file is read through a handle on the process's /proc directory: once its start
        # time matched the scan's, every later read is of that same process (a vanished
        # process's directory answers ESRCH, and a reused pid gets a directory of its own).
        try:
            folder = os.open(f"/proc/{key[0]}", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None  # vanished since the scan
        try:
            try:
                # After the ")" closing the command name: state(3) ppid(4) ... flags(9) ...
                # utime(14) stime(15) ... starttime(22) ... startstack(28)
                stat = _read_stat(folder)
                state, ppid, flags, stack = stat[0], int(stat[1]), int(stat[6]), int(stat[25])
                user, system = int(stat[11]) / _CLOCK_TICKS, int(stat[12]) / _CLOCK_TICKS
                start = float(stat[19])
            except (OSError, ValueError, IndexError):
                return None  # vanished, or a truncated read
            if start != key[1]:
                return None  # the pid was reused since the scan: someone else's process
            if flags & _PF_FORKNOEXEC and self._copy_of_excluded(ppid, stack):
                return None
            tracked = self._track(key)
            tracked.user = max(tracked.user, user)
            tracked.system = max(tracked.system, system)
            io = _read_io(folder)
            if io is not None:
                tracked.read_bytes = max(tracked.read_bytes, io[0])
                tracked.write_bytes = max(tracked.write_bytes, io[1])
            if state in _ZOMBIE_STATES:
                return None  # exited, not yet reaped: no memory any more
            tracked.hwm = max(tracked.hwm, _read_hwm(folder))
            return _read_memory(folder)
        finally:
            os.close(folder)

    def _copy_of_excluded(self, ppid: int, stack: int) -> bool:
        """Whether a process that has not exec'd since it forked was forked by an excluded
        process (the wrapper starting a command), so that its memory is that process's: a vfork
        child even reads as all of it. An orphan adopted by a sub-reaper wrapper also has it as
        parent, but came from another program: it has that program's stack, not the wrapper's."""
        return ppid in self.exclude_pids and stack != 0 and stack == _start_stack(ppid)

    def _measure_psutil(self, ps: ModuleType, key: _Key) -> tuple[int, int] | None:
        try:
            tracked = self._tracked.get(key) or self._track(key, ps.Process(key[0]))
            with tracked.proc.oneshot():
                times = tracked.proc.cpu_times()
                tracked.user = max(tracked.user, times.user)
                tracked.system = max(tracked.system, times.system)
                _update_io(ps, tracked)
                if tracked.proc.status() == ps.STATUS_ZOMBIE:
                    return None  # exited, not yet reaped: no memory any more
                tracked.hwm = max(tracked.hwm, _peak_rss(key[0]))
                return _memory(ps, tracked.proc)
        except (ps.NoSuchProcess, ps.AccessDenied):
            return None  # vanished between the scan and now

    def _retire_vanished(self, table: _Table) -> None:
        """Fold the last-seen counters of vanished processes into one record, so memory use does
        not grow with the number of processes a task ever started."""
        for key in [key for key in self._tracked if not _same(table, *key)]:
            gone = self._tracked.pop(key)
            self._gone.user += gone.user
            self._gone.system += gone.system
            self._gone.read_bytes += gone.read_bytes
            self._gone.write_bytes += gone.write_bytes
            self._gone.hwm = max(self._gone.hwm, gone.hwm)


def _same(table: _Table, pid: int, start: float) -> bool:
    entry = table.get(pid)
    return entry is not None and entry[2] == start


# -- Linux: /proc ---------------------------------------------------------------------------------
# Plain os.open/os.read cost a third less than open() per file. Every reader raises OSError
# (FileNotFoundError, ProcessLookupError, PermissionError), ValueError or IndexError on a vanished
# process or a truncated read, or catches them where a fallback exists.


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


def _read_stat(folder: int) -> list[bytes]:
    """The fields of /proc/PID/stat from the state on: field N (man 5 proc) at index N - 3."""
    data = _read_at("stat", folder)
    return data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces and ")"


def _start_stack(pid: int) -> int:
    """Where a process's stack starts: changed by exec, inherited by fork. 0 where unreadable."""
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        return int(_read_stat(folder)[25])
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        os.close(folder)


def _read_io(folder: int) -> tuple[int, int] | None:
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


def _read_hwm(folder: int) -> int:
    """VmHWM: the process's own peak RSS, which no sampling gap can hide. Reset by exec, so a
    task never inherits the wrapper's size through it. 0 where unreadable."""
    try:
        data = _read_at("status", folder)
        at = data.find(b"\nVmHWM:")
        return int(data[at + 7 :].split(None, 1)[0]) * 1024 if at >= 0 else 0
    except (OSError, ValueError, IndexError):
        return 0


def _read_memory(folder: int) -> tuple[int, int] | None:
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


def _proc_table() -> _Table:
    """Every process on the machine with its parent, session and start time, in one pass."""
    # One read of /proc/PID/stat per process gives all three fields (psutil would need three):
    # this scan is most of a small sample's cost (about 10 µs per process on the machine).
    table: _Table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            # After the ")" closing the command name: state ppid pgrp session ... starttime(22)
            fields = data[data.rindex(b")") + 2 :].split()
            table[int(name)] = (int(fields[1]), int(fields[3]), float(fields[19]))
        except (OSError, ValueError, IndexError):
            continue  # exited during the scan
    return table


# -- elsewhere: psutil ----------------------------------------------------------------------------


def _memory(ps: ModuleType, proc: Any) -> tuple[int, int]:
    """The best memory figure readable for one process: PSS, else USS, else RSS."""
    try:
        full = proc.memory_full_info()
    except ps.AccessDenied:
        return int(proc.memory_info().rss), 2
    for index, name in enumerate(_METRICS):
        value = getattr(full, name, None)
        if value is not None:
            return int(value), index
    return int(full.rss), 2


def _update_io(ps: ModuleType, tracked: _Tracked) -> None:
    try:
        io = tracked.proc.io_counters()
    except (ps.AccessDenied, AttributeError):
        return  # unreadable, or no io_counters on this platform (macOS)
    tracked.read_bytes = max(tracked.read_bytes, io.read_bytes)
    tracked.write_bytes = max(tracked.write_bytes, io.write_bytes)


def _peak_rss(pid: int) -> int:
    """VmHWM by path, for systems with a /proc but no sampler reading it (0 elsewhere)."""
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        return _read_hwm(folder)
    finally:
        os.close(folder)


def _psutil_table(ps: ModuleType) -> _Table:
    table: _Table = {}
    for proc in ps.process_iter(["ppid", "create_time"]):
        try:
            table[proc.pid] = (
                proc.info["ppid"] or 0,
                os.getsid(proc.pid),
                proc.info["create_time"],
            )
        except OSError:
            continue
    return table


def _import_psutil() -> ModuleType:
    # Through importlib: psutil ships no type information, and this way mypy is content with
    # or without types-psutil installed.
    return importlib.import_module("psutil")


# -- combining the sources ------------------------------------------------------------------------


def combine(
    *,
    sample: TreeSample | None,
    children_rusage: resource.struct_rusage,
    wallclock: float,
    cgroup_peak: int | None,
    wrapper_rss_at_start: int | None,
    gpu: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The protocol's usage dict: maxrss (bytes), cpu (seconds), wallclock, usage_str (JSON).

    maxrss: the task cgroup's peak when it ran in one; else the larger of the sampled peak and
    the children's ru_maxrss, where ru_maxrss only counts if it is above the wrapper's RSS at
    fork (+5%), since below that it may be the wrapper's own pages copied by fork.
    cpu: the children's rusage (every reaped descendant), or the sampled cpu when larger (it
    also sees processes nobody reaped, such as daemons adopted by init).
    """
    import json  # here: the sampler, imported before every task, never needs it

    sampled = _sampled_peak(sample)
    rusage_maxrss = int(children_rusage.ru_maxrss) * _MAXRSS_UNIT
    maxrss, source = _pick_maxrss(sampled, rusage_maxrss, cgroup_peak, wrapper_rss_at_start)
    user, system, cpu_source = _pick_cpu(sample, children_rusage)
    details: dict[str, Any] = {
        "maxrss_source": source,
        "metric": sample.metric if sample is not None else "none",
        "user": round(user, 6),
        "system": round(system, 6),
        "cpu_source": cpu_source,
        "read_bytes": max(sample.read_bytes if sample else 0, children_rusage.ru_inblock * _BLOCK),
        "write_bytes": max(
            sample.write_bytes if sample else 0, children_rusage.ru_oublock * _BLOCK
        ),
        "peak_processes": sample.peak_processes if sample else None,
        "processes_seen": sample.processes_seen if sample else None,
        "samples": sample.samples if sample else 0,
        "rusage_maxrss": rusage_maxrss,
        "sampled_peak": sample.peak_bytes if sample else None,
        "largest_process_peak": sample.largest_process_peak if sample else None,
        "cgroup_peak": cgroup_peak,
    }
    if gpu is not None:
        details["gpu_memory"] = gpu
    return {
        "maxrss": maxrss,
        "cpu": round(user + system, 6),
        "wallclock": wallclock,
        "usage_str": json.dumps(details, sort_keys=True, separators=(",", ":")),
    }


def _sampled_peak(sample: TreeSample | None) -> int | None:
    """The sampler's answer, or None if it never measured a process (then it knows nothing)."""
    if sample is None or sample.processes_seen == 0:
        return None
    # A single process's VmHWM catches a peak that fell between two samples.
    return max(sample.peak_bytes, sample.largest_process_peak)


def _pick_maxrss(
    sampled: int | None, rusage_maxrss: int, cgroup_peak: int | None, wrapper_rss: int | None
) -> tuple[int, str]:
    if cgroup_peak is not None:
        return cgroup_peak, "cgroup"
    floored = wrapper_rss is not None and rusage_maxrss <= wrapper_rss * _FORK_FLOOR_MARGIN
    if sampled is None:
        # Nothing else to go by: a floored value is still an upper bound of the task's peak.
        return rusage_maxrss, "rusage_bound" if floored else "rusage"
    if not floored and rusage_maxrss > sampled:
        return rusage_maxrss, "rusage"
    return sampled, "sampled"


def _pick_cpu(
    sample: TreeSample | None, rusage: resource.struct_rusage
) -> tuple[float, float, str]:
    # Never the sum: the two overlap for every process that was both sampled and reaped.
    if (
        sample is not None
        and sample.cpu_user + sample.cpu_system > rusage.ru_utime + rusage.ru_stime
    ):
        return sample.cpu_user, sample.cpu_system, "sampled"
    return rusage.ru_utime, rusage.ru_stime, "rusage"


def rusage_sum(usages: list[resource.struct_rusage]) -> resource.struct_rusage:
    """One rusage for the task and every orphan the wrapper reaped (wait4 gives one each).

    Times and counters add up; ru_maxrss is a maximum, not a sum, so it is the largest.
    """
    fields = list(usages[0])
    for usage in usages[1:]:
        for index, value in enumerate(usage):
            fields[index] = max(fields[index], value) if index == 2 else fields[index] + value
    return resource.struct_rusage(fields)


def current_rss() -> int | None:
    """This process's RSS in bytes now (Linux), else its peak RSS (never less than now)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT
    except OSError:
        return None


# -- GPUs -----------------------------------------------------------------------------------------


def gpu_usage() -> dict[str, Any] | None:
    """Memory in use (bytes) on each visible GPU, keyed by NVML index; None without NVML.

    The whole device's use, not only this task's: per-process figures need NVML features that
    are missing in containers. "Visible" follows CUDA_VISIBLE_DEVICES (indices or UUIDs).
    """
    try:
        nvml: Any = importlib.import_module("pynvml")  # optional, never a dependency
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None
    try:
        return _gpu_memory(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _gpu_memory(nvml: Any, visible: str | None) -> dict[str, Any]:
    wanted = None if visible is None else {item.strip() for item in visible.split(",")}
    used: dict[str, Any] = {}
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        if wanted is None or str(index) in wanted or uuid in wanted:
            used[str(index)] = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    return used
