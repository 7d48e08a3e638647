"""Measuring a task's process tree with real processes: peaks, shared pages, escapees, combine()."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

from jobfleet.worker_node import procfs
from jobfleet.worker_node import sampler as sampler_module
from jobfleet.worker_node.usage import (
    TreeSample,
    TreeSampler,
    combine,
    current_rss,
    gpu_usage,
    rusage_sum,
)

MB = 1024 * 1024
PAGE_TOUCH = "block[::4096] = b'x' * len(range(0, len(block), 4096))"

# argv: MB DEPTH. Touches MB, starts the next level (a fresh python, not a fork), says "ready"
# and waits for its stdin (shared by the whole tree) to close.
TREE = f"""
import os, subprocess, sys
mb, depth = int(sys.argv[1]), int(sys.argv[2])
block = bytearray(mb * 1048576)
{PAGE_TOUCH}
child = None
if depth > 1:
    child = subprocess.Popen([sys.executable, __file__, str(mb), str(depth - 1)])
print("ready", flush=True)
sys.stdin.read()
if child:
    child.wait()
"""

# Touches 200 MB, then forks two children that only read it.
SHARED = f"""
import os, sys
block = bytearray(200 * 1048576)
{PAGE_TOUCH}
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        total = sum(block[::4096])
        print("ready", total, flush=True)
        sys.stdin.read()
        os._exit(0)
    children.append(pid)
print("ready parent", flush=True)
sys.stdin.read()
for pid in children:
    os.waitpid(pid, 0)
"""

# argv: HOLD_INTERMEDIATE_FD RELEASE_DAEMON_FD. Double fork with a new session; the daemon
# touches 100 MB and prints its pid. The intermediate exits when the first fd reaches EOF, the
# daemon when the second does; the root exits with the intermediate.
DAEMON = f"""
import os, sys
hold, release = int(sys.argv[1]), int(sys.argv[2])
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        block = bytearray(100 * 1048576)
        {PAGE_TOUCH}
        print(os.getpid(), flush=True)
        os.read(release, 1)
        os._exit(0)
    os.read(hold, 1)
    os._exit(0)
os.waitpid(middle, 0)
"""

# A wrapper in miniature: becomes a child sub-reaper, runs a daemonising command whose
# intermediate exits at once, samples its own tree (minus itself), prints the TreeSample.
SUBREAPER_WRAPPER = f"""
import ctypes, json, os, subprocess, sys, time
from jobfleet.worker_node.usage import TreeSampler
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
ballast = bytearray(150 * 1048576)
ballast[::4096] = b'x' * len(range(0, len(ballast), 4096))
daemon = '''
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        block = bytearray(100 * 1048576)
        {PAGE_TOUCH}
        print(os.getpid(), flush=True)
        sys.stdin.read()
    os._exit(0)
'''
sampler = TreeSampler(os.getpid(), exclude_pids=frozenset({{os.getpid()}}), max_interval=0.05,
                      root_is_subreaper=sys.argv[1] == "tree")
sampler.start()
task = subprocess.Popen([sys.executable, "-c", daemon], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
orphan = int(task.stdout.readline())
task.wait()
deadline = time.monotonic() + 30
while orphan not in sampler.tracked_pids() or sampler.current_bytes < 90 * 1048576:
    assert time.monotonic() < deadline, "sampler never measured the orphan"
    time.sleep(0.01)
task.stdin.close()
os.waitpid(orphan, 0)
print(json.dumps(sampler.stop().as_dict()))
"""

# Burns 0.6 s of cpu in a short-lived child, which then waits to be released and exits while
# its parent (the root) goes on.
BURNER = """
import subprocess, sys
burn = (
    "import sys, time\\n"
    "while time.process_time() < 0.6: pass\\n"
    "print('burnt', flush=True)\\n"
    "sys.stdin.readline()\\n"
)
child = subprocess.Popen([sys.executable, "-c", burn])  # shares the root's stdin
child.wait()
print("child gone", flush=True)
sys.stdin.read()
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_for_samples(sampler: TreeSampler, more: int) -> None:
    target = sampler.snapshot().samples + more
    wait_until(lambda: sampler.snapshot().samples >= target, f"{more} more samples")


def read_lines(stream: IO[str] | None, count: int) -> list[str]:
    assert stream is not None
    return [stream.readline().strip() for _ in range(count)]


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], str]:
    def write(source: str) -> str:
        path = tmp_path / f"script{len(list(tmp_path.iterdir()))}.py"
        path.write_text(source)
        return str(path)

    return write


@pytest.fixture
def sampler_for() -> Iterator[Callable[[int], TreeSampler]]:
    started: list[TreeSampler] = []

    def start(pid: int) -> TreeSampler:
        sampler = TreeSampler(pid, max_interval=0.05)
        sampler.start()
        started.append(sampler)
        return sampler

    yield start
    for sampler in started:
        sampler.stop()


def run_tree(
    script_path: str, args: list[str], ready: int, sampler_for: Callable[[int], TreeSampler]
) -> TreeSample:
    """Run a tree until `ready` processes said so, let the sampler see it, release, measure."""
    task = subprocess.Popen(
        [sys.executable, script_path, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sampler = sampler_for(task.pid)
    assert all(line.startswith("ready") for line in read_lines(task.stdout, ready))
    wait_for_samples(sampler, 3)
    assert task.stdin is not None
    task.stdin.close()
    assert task.wait(timeout=60) == 0
    return sampler.stop()


def test_one_process_touching_200_mb(
    script: Callable[[str], str], sampler_for: Callable[[int], TreeSampler]
) -> None:
    sample = run_tree(script(TREE), ["200", "1"], 1, sampler_for)
    assert sample.metric == "pss"
    assert abs(sample.peak_bytes - 200 * MB) <= 20 * MB, sample.peak_bytes / MB
    assert sample.largest_process_peak >= 200 * MB
    assert sample.peak_processes == 1
    assert sample.errors == 0


def test_a_tree_of_three_processes_adds_up(
    script: Callable[[str], str], sampler_for: Callable[[int], TreeSampler]
) -> None:
    sample = run_tree(script(TREE), ["100", "3"], 3, sampler_for)
    assert abs(sample.peak_bytes - 300 * MB) <= 30 * MB, sample.peak_bytes / MB
    assert sample.peak_processes == 3
    assert sample.processes_seen == 3
    assert sample.current_processes == 0  # the last sample came after the tree exited


def test_shared_pages_are_counted_once(script: Callable[[str], str]) -> None:
    task = subprocess.Popen(
        [sys.executable, script(SHARED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sampler = TreeSampler(task.pid, max_interval=0.05)
    sampler.start()
    read_lines(task.stdout, 3)
    wait_for_samples(sampler, 3)
    tree = [psutil.Process(task.pid), *psutil.Process(task.pid).children(recursive=True)]
    rss_sum = sum(process.memory_info().rss for process in tree)
    assert task.stdin is not None
    task.stdin.close()
    assert task.wait(timeout=60) == 0
    sample = sampler.stop()

    assert rss_sum > 550 * MB  # what naive RSS summing would have reported
    assert sample.metric == "pss"
    assert sample.peak_processes == 3
    assert 180 * MB <= sample.peak_bytes <= 230 * MB, sample.peak_bytes / MB


def test_a_daemonising_grandchild_is_still_measured_once_seen(
    script: Callable[[str], str], sampler_for: Callable[[int], TreeSampler]
) -> None:
    hold_read, hold_write = os.pipe()
    release_read, release_write = os.pipe()
    task = subprocess.Popen(
        [sys.executable, script(DAEMON), str(hold_read), str(release_read)],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(hold_read, release_read),
        start_new_session=True,
    )
    os.close(hold_read)
    os.close(release_read)
    sampler = sampler_for(task.pid)
    daemon = int(read_lines(task.stdout, 1)[0])
    wait_until(lambda: daemon in sampler.tracked_pids(), "the sampler to see the daemon")

    os.close(hold_write)  # the intermediate exits, the root follows: the daemon is an orphan
    assert task.wait(timeout=60) == 0
    assert os.getsid(daemon) != task.pid
    wait_until(lambda: psutil.Process(daemon).ppid() != task.pid, "the daemon to be re-parented")
    wait_for_samples(sampler, 3)
    live = sampler.snapshot()
    assert sampler.tracked_pids() == {daemon}
    assert live.current_processes == 1
    assert live.current_bytes >= 95 * MB

    os.close(release_write)
    wait_until(lambda: daemon not in sampler.tracked_pids(), "the daemon to end")
    sample = sampler.stop()
    assert sample.peak_bytes >= 95 * MB
    assert sample.processes_seen == 3


@pytest.mark.parametrize("reads", ["tree", "all of /proc"])
def test_a_subreaper_wrapper_measures_adopted_orphans_but_not_itself(
    script: Callable[[str], str], reads: str
) -> None:
    # "tree": the sampler reads only the wrapper's tree (root_is_subreaper), not all of /proc.
    result = subprocess.run(
        [sys.executable, script(SUBREAPER_WRAPPER), reads],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr
    sample = json.loads(result.stdout)
    # The wrapper holds 150 MB ballast of its own: none of it may show up.
    assert abs(sample["peak_bytes"] - 100 * MB) <= 15 * MB, sample["peak_bytes"] / MB
    assert sample["largest_process_peak"] < 140 * MB
    assert sample["processes_seen"] >= 2


def test_cpu_of_a_process_that_vanished_is_kept(
    script: Callable[[str], str], sampler_for: Callable[[int], TreeSampler]
) -> None:
    task = subprocess.Popen(
        [sys.executable, script(BURNER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sampler = sampler_for(task.pid)
    assert read_lines(task.stdout, 1) == ["burnt"]
    wait_for_samples(sampler, 3)  # at least one sample after the burning ended
    assert task.stdin is not None
    task.stdin.write("\n")  # the burner exits; the root lives on
    task.stdin.flush()
    assert read_lines(task.stdout, 1) == ["child gone"]
    wait_until(lambda: sampler.snapshot().current_processes == 1, "the burner to vanish")
    # 0.6 s burnt, 0.5 s asked for: /proc counts cpu in clock ticks, rounded down.
    assert sampler.snapshot().cpu_user + sampler.snapshot().cpu_system >= 0.5
    task.stdin.close()
    assert task.wait(timeout=60) == 0
    sample = sampler.stop()
    assert sample.cpu_user + sample.cpu_system >= 0.5
    assert sample.processes_seen == 2


def test_a_storm_of_short_processes_never_kills_the_sampler(
    sampler_for: Callable[[int], TreeSampler],
) -> None:
    task = subprocess.Popen(
        ["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"],
        start_new_session=True,
    )
    sampler = sampler_for(task.pid)
    assert task.wait(timeout=120) == 0
    sample = sampler.stop()
    assert sample.errors == 0
    assert sample.samples >= 1
    assert sample.sampling_seconds > 0


def test_a_root_that_never_existed_gives_an_empty_sample() -> None:
    sampler = TreeSampler(2**22 + 12345)
    sampler.start()
    sample = sampler.stop()
    assert sample == sampler.stop()
    assert (sample.processes_seen, sample.peak_bytes, sample.metric) == (0, 0, "none")
    assert sample.errors == 0


def test_the_sampler_never_measures_its_own_process() -> None:
    sampler = TreeSampler(os.getpid())
    sampler.start()
    wait_until(lambda: sampler.snapshot().samples >= 2, "two samples")
    sample = sampler.stop()
    assert sample.peak_bytes < (current_rss() or 0)


def test_interval_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="first_interval"):
        TreeSampler(1, first_interval=2.0, max_interval=1.0)


# -- Linux: /proc without psutil -----------------------------------------------------------------

linux_only = pytest.mark.skipif(not procfs.HAS_PROC, reason="reads /proc")

# A whole start/sample/stop cycle in a fresh interpreter (this one imported psutil long ago).
NO_PSUTIL = f"""
import json, os, subprocess, sys, time
from jobfleet.worker_node.usage import TreeSampler
holder = '''
import sys
block = bytearray(50 * 1048576)
{PAGE_TOUCH}
print("ready", flush=True)
sys.stdin.read()
'''
child = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
sampler = TreeSampler(os.getpid(), exclude_pids=frozenset({{os.getpid()}}), max_interval=0.05)
sampler.start()
deadline = time.monotonic() + 30
while child.pid not in sampler.tracked_pids():
    assert time.monotonic() < deadline, "sampler never measured the child"
    time.sleep(0.01)
child.stdin.close()
child.wait()
sample = sampler.stop()
print(json.dumps({{"psutil": "psutil" in sys.modules, "sample": sample.as_dict()}}))
"""


@linux_only
def test_sampling_on_linux_never_imports_psutil() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_PSUTIL], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["psutil"] is False
    sample = seen["sample"]
    assert sample["metric"] == "pss"
    assert abs(sample["peak_bytes"] - 50 * MB) <= 15 * MB, sample["peak_bytes"] / MB
    assert sample["largest_process_peak"] >= 50 * MB
    assert sample["processes_seen"] == 1
    assert sample["errors"] == 0


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


GONE = ProcessLookupError(3, "No such process")
MISSING = FileNotFoundError(2, "No such file or directory")
DENIED = PermissionError(13, "Permission denied")
TRUNCATED = b"1234 (sle"  # what a read cut short by the process's end could leave


@linux_only
@pytest.mark.parametrize(
    ("faults", "metric"),
    [
        ({"stat": GONE}, None),
        ({"stat": MISSING}, None),
        ({"stat": TRUNCATED}, None),
        ({"io": DENIED}, "pss"),
        ({"io": TRUNCATED}, "pss"),
        ({"status": GONE}, "pss"),
        ({"status": TRUNCATED}, "pss"),
        ({procfs._SMAPS: GONE}, None),
        ({procfs._SMAPS: DENIED}, "rss"),  # another user's process: statm is readable
        ({procfs._SMAPS: TRUNCATED}, "rss"),
        ({procfs._SMAPS: DENIED, "statm": GONE}, None),
        ({procfs._SMAPS: DENIED, "statm": TRUNCATED}, None),
    ],
)
def test_a_process_vanishing_mid_read_never_kills_the_sampler(
    sleeper: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    faults: dict[str, OSError | bytes],
    metric: str | None,
) -> None:
    real_read = procfs._read_at

    def faulty_read(name: str, folder: int, *, whole: bool = False) -> bytes:
        fault = faults.get(name)
        if isinstance(fault, bytes):
            return fault
        if fault is not None:
            raise fault
        return real_read(name, folder, whole=whole)

    monkeypatch.setattr(procfs, "_read_at", faulty_read)
    sampler = TreeSampler(sleeper.pid, max_interval=0.05)
    sampler.start()
    wait_for_samples(sampler, 3)  # the thread lives on
    assert sampler.tracked_pids() == (set() if metric is None else {sleeper.pid})
    sample = sampler.stop()
    assert sample.errors == 0
    assert sample.metric == (metric or "none")
    assert (sample.peak_bytes > 0) == (metric is not None)
    if "stat" not in faults:
        assert sample.processes_seen == 1  # alive, so seen, even when its memory is unreadable


@linux_only
@pytest.mark.parametrize(
    ("rollup", "metric", "kib"),
    [
        (b"Rss: 900 kB\nPss: 300 kB\nPrivate_Clean: 40 kB\nPrivate_Dirty: 60 kB\n", "pss", 300),
        (b"Rss: 900 kB\nPrivate_Clean: 40 kB\nPrivate_Dirty: 60 kB\n", "uss", 100),
        (b"Rss: 900 kB\n", "rss", 900),
    ],
)
def test_memory_falls_back_from_pss_to_uss_to_rss(
    sleeper: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    rollup: bytes,
    metric: str,
    kib: int,
) -> None:
    real_read = procfs._read_at

    def read(name: str, folder: int, *, whole: bool = False) -> bytes:
        return rollup if name == procfs._SMAPS else real_read(name, folder, whole=whole)

    monkeypatch.setattr(procfs, "_read_at", read)
    sample = TreeSampler(sleeper.pid).stop()  # never started: stop() still takes a last sample
    assert (sample.metric, sample.peak_bytes) == (metric, kib * 1024)
    assert sample.largest_process_peak > 0  # VmHWM, from status


@linux_only
def test_a_reused_pid_is_never_taken_for_the_process_it_replaced(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = procfs.proc_table()[sleeper.pid][2]
    real_table = procfs.proc_table

    # The scan saw an earlier process under the sleeper's pid, which ended before the reads.
    def earlier_table() -> dict[int, tuple[int, int, float]]:
        table = real_table()
        ppid, sid, _ = table[sleeper.pid]
        table[sleeper.pid] = (ppid, sid, start - 1)
        return table

    monkeypatch.setattr(procfs, "proc_table", earlier_table)
    sample = TreeSampler(sleeper.pid).stop()
    assert (sample.processes_seen, sample.peak_bytes, sample.errors) == (0, 0, 0)
    monkeypatch.undo()

    # A process followed earlier ended, and its pid now belongs to the sleeper: the sleeper is
    # not followed, and what the old process used is kept.
    sampler = TreeSampler(2**22 + 12345)
    old = sampler_module._Tracked()
    old.user = 1.5
    sampler._tracked[(sleeper.pid, start - 1)] = old
    sample = sampler.stop()
    assert sampler.tracked_pids() == frozenset()
    assert (sample.processes_seen, sample.peak_bytes, sample.cpu_user) == (0, 0, 1.5)
    assert sample.errors == 0


@linux_only
def test_an_excluded_process_forked_but_not_yet_execd_is_not_measured(
    sleeper: subprocess.Popen[bytes],
) -> None:
    # What a sample sees while the wrapper starts a command: between fork (or vfork, sharing all
    # of the wrapper's memory) and exec, the child's memory is the wrapper's.
    release_read, release_write = os.pipe()
    copy = os.fork()
    if copy == 0:  # pragma: no cover - the child only waits for the test to end
        os.close(release_write)
        os.read(release_read, 1)
        os._exit(0)
    try:
        sampler = TreeSampler(os.getpid(), exclude_pids=frozenset({os.getpid()}))
        sample = sampler.stop()
        assert sleeper.pid in sampler.tracked_pids()  # a child that has exec'd counts
        assert copy not in sampler.tracked_pids()
        assert sample.errors == 0
    finally:
        os.close(release_write)
        os.waitpid(copy, 0)
        os.close(release_read)


def test_stop_does_not_wait_out_a_long_interval(sleeper: subprocess.Popen[bytes]) -> None:
    sampler = TreeSampler(sleeper.pid, first_interval=3600.0, max_interval=3600.0)
    sampler.start()  # the thread waits an hour for its first sample
    stopper = threading.Thread(target=sampler.stop)
    stopper.start()
    stopper.join(timeout=60)  # a bound against hanging, not a speed measurement
    assert not stopper.is_alive(), "stop() waited for the sampling interval"
    sample = sampler.stop()
    assert sample.samples == 1  # stop()'s own, of the sleeper
    assert (sample.processes_seen, sample.errors) == (1, 0)


def test_a_sample_cut_short_by_stop_is_not_recorded(sleeper: subprocess.Popen[bytes]) -> None:
    sampler = TreeSampler(sleeper.pid)
    stopping = threading.Event()
    stopping.set()
    sampler._sample(stopping)  # what the thread does once stop() was called
    assert (sampler.snapshot().samples, sampler.current_bytes) == (0, None)
    assert sampler.stop().samples == 1


def test_the_psutil_fallback_measures_the_same(
    script: Callable[[str], str],
    sampler_for: Callable[[int], TreeSampler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What runs where there is no /proc, forced here so that it keeps working.
    monkeypatch.setattr(procfs, "HAS_PROC", False)
    sample = run_tree(script(TREE), ["100", "2"], 2, sampler_for)
    assert sample.metric == "pss"
    assert abs(sample.peak_bytes - 200 * MB) <= 20 * MB, sample.peak_bytes / MB
    assert sample.peak_processes == 2
    assert sample.errors == 0


# -- combine() -----------------------------------------------------------------------------------


def rusage(
    user: float = 0.0, system: float = 0.0, maxrss_kib: int = 0, inblock: int = 0
) -> resource.struct_rusage:
    fields = [0] * 16
    fields[:3] = [user, system, maxrss_kib]  # type: ignore[list-item]
    fields[9] = inblock
    return resource.struct_rusage(fields)


def tree_sample(peak: int, user: float = 0.0, system: float = 0.0) -> TreeSample:
    return TreeSample(
        peak_bytes=peak,
        metric="pss",
        peak_processes=2,
        samples=7,
        processes_seen=3,
        read_bytes=4096,
        write_bytes=8192,
        cpu_user=user,
        cpu_system=system,
        largest_process_peak=peak // 2,
        current_bytes=0,
        current_processes=0,
        sampling_seconds=0.01,
        errors=0,
    )


def details(stats: dict[str, object]) -> dict[str, object]:
    assert isinstance(stats["usage_str"], str)
    parsed = json.loads(stats["usage_str"])
    assert isinstance(parsed, dict)
    return parsed


def test_combine_prefers_the_cgroup_peak() -> None:
    stats = combine(
        sample=tree_sample(300 * MB),
        children_rusage=rusage(1.0, 0.5, maxrss_kib=500 * 1024),
        wallclock=3.0,
        cgroup_peak=320 * MB,
        wrapper_rss_at_start=30 * MB,
    )
    assert stats["maxrss"] == 320 * MB
    assert stats["cpu"] == 1.5
    assert stats["wallclock"] == 3.0
    info = details(stats)
    assert info["maxrss_source"] == "cgroup"
    assert (info["cgroup_peak"], info["sampled_peak"]) == (320 * MB, 300 * MB)
    assert info["rusage_maxrss"] == 500 * MB
    expected_keys = {
        "maxrss_source",
        "metric",
        "user",
        "system",
        "read_bytes",
        "write_bytes",
        "peak_processes",
        "samples",
        "rusage_maxrss",
        "sampled_peak",
        "cgroup_peak",
    }
    assert expected_keys <= info.keys()
    assert "gpu_memory" not in info


def test_combine_ignores_a_fork_floored_rusage() -> None:
    # A 400 MB wrapper forked a tiny task: ru_maxrss says 410 MB, the sampler saw 2 MB.
    stats = combine(
        sample=tree_sample(2 * MB),
        children_rusage=rusage(maxrss_kib=410 * 1024),
        wallclock=0.1,
        cgroup_peak=None,
        wrapper_rss_at_start=400 * MB,
    )
    assert stats["maxrss"] == 2 * MB
    assert details(stats)["maxrss_source"] == "sampled"


def test_combine_takes_rusage_when_it_is_the_task_and_above_the_samples() -> None:
    # A peak between two samples, well above the wrapper's size: rusage saw it.
    stats = combine(
        sample=tree_sample(50 * MB),
        children_rusage=rusage(maxrss_kib=800 * 1024),
        wallclock=1.0,
        cgroup_peak=None,
        wrapper_rss_at_start=30 * MB,
    )
    assert stats["maxrss"] == 800 * MB
    assert details(stats)["maxrss_source"] == "rusage"


def test_combine_without_samples_reports_the_floored_value_as_a_bound() -> None:
    stats = combine(
        sample=None,
        children_rusage=rusage(maxrss_kib=31 * 1024),
        wallclock=0.01,
        cgroup_peak=None,
        wrapper_rss_at_start=30 * MB,
    )
    assert stats["maxrss"] == 31 * MB
    info = details(stats)
    assert info["maxrss_source"] == "rusage_bound"
    assert info["metric"] == "none"
    assert info["samples"] == 0


def test_combine_cpu_and_io_take_the_larger_source() -> None:
    # Daemons adopted by init are never in the wrapper's rusage, but the sampler saw them.
    stats = combine(
        sample=tree_sample(10 * MB, user=4.0, system=1.0),
        children_rusage=rusage(1.0, 0.25, maxrss_kib=1024, inblock=100),
        wallclock=9.0,
        cgroup_peak=None,
        wrapper_rss_at_start=None,
        gpu={"0": 1024},
    )
    assert stats["cpu"] == 5.0
    info = details(stats)
    assert (info["user"], info["system"], info["cpu_source"]) == (4.0, 1.0, "sampled")
    assert info["read_bytes"] == 100 * 512  # 512-byte blocks from rusage beat 4096 sampled
    assert info["write_bytes"] == 8192
    assert info["gpu_memory"] == {"0": 1024}


def test_the_fork_floor_is_real_and_combine_sees_through_it() -> None:
    # A fat parent forks (a real fork, not vfork) and execs /bin/true.
    probe = f"""
import json, os, resource
from jobfleet.worker_node.usage import current_rss
block = bytearray(300 * 1048576)
{PAGE_TOUCH}
rss = current_rss()
pid = os.fork()
if pid == 0:
    os.execv("/bin/true", ["/bin/true"])
os.waitpid(pid, 0)
print(json.dumps([rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    wrapper_rss, maxrss_kib = json.loads(result.stdout)
    assert maxrss_kib * 1024 >= 0.9 * wrapper_rss  # /bin/true "used" 300 MB

    stats = combine(
        sample=tree_sample(1 * MB),
        children_rusage=rusage(maxrss_kib=maxrss_kib),
        wallclock=0.01,
        cgroup_peak=None,
        wrapper_rss_at_start=wrapper_rss,
    )
    assert stats["maxrss"] == 1 * MB
    assert details(stats)["maxrss_source"] == "sampled"


def test_rusage_sum_adds_counters_but_keeps_the_maximum() -> None:
    task = rusage(1.0, 0.5, maxrss_kib=250, inblock=10)
    orphan = rusage(2.0, 1.0, maxrss_kib=100, inblock=30)
    total = rusage_sum([task, orphan])
    assert (total.ru_utime, total.ru_stime) == (3.0, 1.5)
    assert total.ru_maxrss == 250
    assert total.ru_inblock == 40
    assert rusage_sum([task]) == task


def test_current_rss_is_this_process() -> None:
    rss = current_rss()
    assert rss is not None
    assert abs(rss - psutil.Process().memory_info().rss) < 20 * MB


def test_gpu_usage_without_nvml_is_none() -> None:
    if importlib.util.find_spec("pynvml") is not None:
        result = gpu_usage()
        assert result is None or all(isinstance(v, int) for v in result.values())
    else:
        assert gpu_usage() is None


@linux_only
def test_the_tree_table_holds_the_tree_and_the_processes_asked_for_only() -> None:
    # A child and its grandchild (a shell running a sleep in the background), and one process
    # outside the tree passed by pid: each with the same entry as a scan of all of /proc gives.
    outsider = subprocess.Popen(["sleep", "30"], start_new_session=True)
    child = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    grandchild = 0
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        table = procfs.tree_table(child.pid, [outsider.pid])
        everything = procfs.proc_table()
        assert table is not None
        assert set(table) == {child.pid, grandchild, outsider.pid}
        assert all(table[pid] == everything[pid] for pid in table)
        assert procfs.tree_table(2**22 + 12345) == {}  # no such process: nothing
    finally:
        if grandchild:
            os.kill(grandchild, signal.SIGKILL)
        for process in (outsider, child):
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
