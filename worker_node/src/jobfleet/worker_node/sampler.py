"""`TreeSampler`: following a task's whole process tree while it runs.

Shared pages are counted once (PSS), escaped and re-parented processes are still followed, but
a peak between two samples can be missed (each process's own VmHWM narrows that gap); see
docs/usage.md. On Linux everything is read from /proc (`procfs.py`) with the stdlib alone.
psutil is the fallback where there is no /proc, imported there by the sampler thread itself, so
the task starts without waiting for it. Imports are kept few: the wrapper pays for them before
every task.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time

from jobfleet.core.frozen import Frozen
from jobfleet.worker_node import procfs

# typing and types are only for the type checker: this idiom saves importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["TreeSample", "TreeSampler"]

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
_ZOMBIE_STATES = (b"Z", b"X")  # exited: cpu still readable, memory gone
_PF_FORKNOEXEC = 0x40  # in /proc/PID/stat's flags: forked, has not exec'd since

_Key = tuple[int, float]


class TreeSample(Frozen):
    """What a `TreeSampler` saw. Memory in bytes, cpu in seconds."""

    _fields = (
        "peak_bytes",
        "metric",
        "peak_processes",
        "samples",
        "processes_seen",
        "read_bytes",
        "write_bytes",
        "cpu_user",
        "cpu_system",
        "largest_process_peak",
        "current_bytes",
        "current_processes",
        "sampling_seconds",
        "errors",
    )
    __slots__ = _fields

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

    def __init__(
        self,
        *,
        peak_bytes: int,
        metric: str,
        peak_processes: int,
        samples: int,
        processes_seen: int,
        read_bytes: int,
        write_bytes: int,
        cpu_user: float,
        cpu_system: float,
        largest_process_peak: int,
        current_bytes: int,
        current_processes: int,
        sampling_seconds: float,
        errors: int,
    ) -> None:
        put = object.__setattr__
        put(self, "peak_bytes", peak_bytes)
        put(self, "metric", metric)
        put(self, "peak_processes", peak_processes)
        put(self, "samples", samples)
        put(self, "processes_seen", processes_seen)
        put(self, "read_bytes", read_bytes)
        put(self, "write_bytes", write_bytes)
        put(self, "cpu_user", cpu_user)
        put(self, "cpu_system", cpu_system)
        put(self, "largest_process_peak", largest_process_peak)
        put(self, "current_bytes", current_bytes)
        put(self, "current_processes", current_processes)
        put(self, "sampling_seconds", sampling_seconds)
        put(self, "errors", errors)


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
        root_is_subreaper: bool = False,
    ) -> None:
        if not 0 < first_interval <= max_interval:
            raise ValueError("need 0 < first_interval <= max_interval")
        self.root_pid = root_pid
        self.exclude_pids = exclude_pids | {os.getpid()}
        self.first_interval = first_interval
        self.max_interval = max_interval
        # A subreaper root holds its whole tree: a sample reads that tree, not all of /proc.
        self.root_is_subreaper = root_is_subreaper
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
        if not procfs.HAS_PROC:
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
        if procfs.HAS_PROC:
            table = None
            if self.root_is_subreaper:
                table = procfs.tree_table(self.root_pid, [pid for pid, _ in list(self._tracked)])
            if table is None:
                table = procfs.proc_table()
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

    def _learn_root(self, table: procfs.Table) -> None:
        # Only in the first sample: a root already gone by then may have had its pid reused.
        self._root_checked = True
        entry = table.get(self.root_pid)
        if entry is not None:
            self._root_start = entry[2]
            self._root_leads_session = entry[1] == self.root_pid

    def _members(self, table: procfs.Table) -> set[int]:
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
        if procfs.HAS_PROC:
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
                stat = procfs.read_stat(folder)
                state, ppid, flags, stack = stat[0], int(stat[1]), int(stat[6]), int(stat[25])
                user, system = (
                    int(stat[11]) / procfs.CLOCK_TICKS,
                    int(stat[12]) / procfs.CLOCK_TICKS,
                )
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
            io = procfs.read_io(folder)
            if io is not None:
                tracked.read_bytes = max(tracked.read_bytes, io[0])
                tracked.write_bytes = max(tracked.write_bytes, io[1])
            if state in _ZOMBIE_STATES:
                return None  # exited, not yet reaped: no memory any more
            tracked.hwm = max(tracked.hwm, procfs.read_hwm(folder))
            return procfs.read_memory(folder)
        finally:
            os.close(folder)

    def _copy_of_excluded(self, ppid: int, stack: int) -> bool:
        """Whether a process that has not exec'd since it forked was forked by an excluded
        process (the wrapper starting a command), so that its memory is that process's: a vfork
        child even reads as all of it. An orphan adopted by a sub-reaper wrapper also has it as
        parent, but came from another program: it has that program's stack, not the wrapper's."""
        return ppid in self.exclude_pids and stack != 0 and stack == procfs.start_stack(ppid)

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
                tracked.hwm = max(tracked.hwm, procfs.peak_rss(key[0]))
                return _memory(ps, tracked.proc)
        except (ps.NoSuchProcess, ps.AccessDenied):
            return None  # vanished between the scan and now

    def _retire_vanished(self, table: procfs.Table) -> None:
        """Fold the last-seen counters of vanished processes into one record, so memory use does
        not grow with the number of processes a task ever started."""
        for key in [key for key in self._tracked if not _same(table, *key)]:
            gone = self._tracked.pop(key)
            self._gone.user += gone.user
            self._gone.system += gone.system
            self._gone.read_bytes += gone.read_bytes
            self._gone.write_bytes += gone.write_bytes
            self._gone.hwm = max(self._gone.hwm, gone.hwm)


def _same(table: procfs.Table, pid: int, start: float) -> bool:
    entry = table.get(pid)
    return entry is not None and entry[2] == start


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


def _psutil_table(ps: ModuleType) -> procfs.Table:
    table: procfs.Table = {}
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
