"""Per-task memory cgroups against the real kernel: limits, OOM kills, peaks, escaped processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from jobfleet.worker_node.cgroup import (
    JOIN_FAILED_EXIT_CODE,
    TaskCgroup,
    _cgroup_path,
    _join,
    _mounts,
    current_memory_cgroup,
)

MB = 1024 * 1024
# Allocates argv[1] MB and writes to every page, so the memory is really used.
ALLOC = (
    "import sys; b = bytearray(int(sys.argv[1]) * 1048576); "
    "b[::4096] = b'x' * len(range(0, len(b), 4096))"
)
# Starts one child in a new session and one double-forked orphan, prints their pids, waits.
ESCAPERS = """
import os, subprocess, sys
runaway = subprocess.Popen(["sleep", "600"], start_new_session=True)
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write_end, str(os.getpid()).encode())
        os.execvp("sleep", ["sleep", "600"])
    os._exit(0)
os.close(write_end)
orphan = os.read(read_end, 32).decode()
print(runaway.pid, orphan, flush=True)
sys.stdin.read()
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., TaskCgroup]]:
    info = current_memory_cgroup()
    if info is None or info.version != 1:
        pytest.skip("no v1 memory cgroup controller on this machine")
    made: list[TaskCgroup] = []

    def make(limit: int | None = None, name: str = "test") -> TaskCgroup:
        cgroup, reason = TaskCgroup.try_create(name, limit)
        assert cgroup is not None, reason
        assert reason == ""
        made.append(cgroup)
        return cgroup

    yield make
    for cgroup in made:
        assert cgroup.remove()


def test_this_process_is_described(make_cgroup: Callable[..., TaskCgroup]) -> None:
    info = current_memory_cgroup()
    assert info is not None
    assert Path(info.path).is_dir()
    assert os.getpid() in TaskCgroup.open(info).pids()
    assert info.has_limit == (info.memory_limit is not None)


def test_created_under_our_own_cgroup_with_a_clean_unique_name(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    info = current_memory_cgroup()
    assert info is not None
    first, second = make_cgroup(name="my task/../x y"), make_cgroup(name="my task/../x y")
    assert Path(first.path).parent == Path(info.path) == Path(second.path).parent
    assert Path(first.path).name.startswith("jobfleet-my_task_")
    assert "/" not in Path(first.path).name
    assert " " not in Path(first.path).name
    assert first.path != second.path
    assert first.limit() is None


def test_limit_covers_memory_and_swap(make_cgroup: Callable[..., TaskCgroup]) -> None:
    cgroup = make_cgroup(limit=50 * MB)
    assert cgroup.limit() == 50 * MB
    memsw = Path(cgroup.path) / "memory.memsw.limit_in_bytes"
    assert cgroup.swap_limited == memsw.exists()
    if memsw.exists():
        assert int(memsw.read_text()) == 50 * MB


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TaskCgroup.try_create("bad", 0)


def test_a_task_over_its_limit_is_oom_killed(make_cgroup: Callable[..., TaskCgroup]) -> None:
    cgroup = make_cgroup(limit=50 * MB)
    # The shell waits on its stdin until it is in the cgroup, then becomes the allocating python.
    gated = f'read _; exec "{sys.executable}" -c "$0" 200'
    task = subprocess.Popen(["/bin/sh", "-c", gated, ALLOC], stdin=subprocess.PIPE)
    cgroup.add_pid(task.pid)
    assert task.pid in cgroup.pids()
    assert task.stdin is not None
    task.stdin.close()
    assert task.wait(timeout=60) == -signal.SIGKILL
    assert cgroup.oom_kills() >= 1
    assert cgroup.peak_bytes() is not None


def test_peak_of_a_100_mb_task_is_within_10_percent(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    cgroup = make_cgroup(limit=500 * MB)
    result = subprocess.run(cgroup.wrap_argv([sys.executable, "-c", ALLOC, "100"]), timeout=60)
    assert result.returncode == 0
    peak = cgroup.peak_bytes()
    assert peak is not None
    assert abs(peak - 100 * MB) <= 10 * MB, peak / MB
    assert cgroup.oom_kills() == 0
    assert cgroup.current_bytes() is not None


def test_wrap_argv_refuses_to_run_outside_its_cgroup(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    cgroup = make_cgroup()
    argv = cgroup.wrap_argv(["echo", "ran"])
    assert cgroup.remove()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == JOIN_FAILED_EXIT_CODE
    assert "ran" not in result.stdout


def test_kill_all_catches_new_sessions_and_double_forked_orphans(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    cgroup = make_cgroup()
    task = subprocess.Popen(
        cgroup.wrap_argv([sys.executable, "-c", ESCAPERS]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert task.stdout is not None
    runaway, orphan = (int(word) for word in task.stdout.readline().split())
    assert os.getsid(runaway) == runaway  # left the task's session and process group
    wait_until(lambda: psutil.Process(orphan).ppid() != task.pid, "the orphan to be re-parented")
    assert {task.pid, runaway, orphan} <= set(cgroup.pids())

    assert cgroup.kill_all(signal.SIGKILL)

    assert cgroup.pids() == []
    assert task.wait(timeout=30) == -signal.SIGKILL
    wait_until(lambda: gone(runaway) and gone(orphan), "the escaped processes to die")


def test_kill_all_with_a_polite_signal_gives_up_at_its_timeout(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    cgroup = make_cgroup()
    stubborn = "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
        "print('ready', flush=True); sys.stdin.read()"
    )
    task = subprocess.Popen(
        cgroup.wrap_argv([sys.executable, "-c", stubborn]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert task.stdout is not None
    assert task.stdout.readline() == "ready\n"
    assert not cgroup.kill_all(signal.SIGTERM, timeout=0.2)
    assert cgroup.pids() == [task.pid]
    assert cgroup.remove()
    assert task.wait(timeout=30) == -signal.SIGKILL


def test_remove_kills_what_is_left_and_is_idempotent(
    make_cgroup: Callable[..., TaskCgroup],
) -> None:
    cgroup = make_cgroup(limit=100 * MB)
    task = subprocess.Popen(cgroup.wrap_argv(["sleep", "600"]))
    wait_until(lambda: task.pid in cgroup.pids(), "the task to join its cgroup")

    assert cgroup.remove()

    assert not Path(cgroup.path).exists()
    assert task.wait(timeout=30) == -signal.SIGKILL
    assert cgroup.remove()
    assert cgroup.pids() == []
    assert cgroup.peak_bytes() is None
    assert cgroup.oom_kills() == 0


def test_context_manager_removes_the_cgroup(make_cgroup: Callable[..., TaskCgroup]) -> None:
    with make_cgroup() as cgroup:
        assert Path(cgroup.path).is_dir()
    assert not Path(cgroup.path).exists()


def test_an_opened_cgroup_is_never_removed() -> None:
    info = current_memory_cgroup()
    if info is None:
        pytest.skip("no memory cgroup on this machine")
    view = TaskCgroup.open(info)
    assert not view.owned
    assert not view.remove()
    assert Path(info.path).is_dir()


def test_v2_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "memory.peak").write_text("123456\n")
    (tmp_path / "memory.current").write_text("1000\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    (tmp_path / "cgroup.procs").write_text("12\n7\n")
    view = TaskCgroup(tmp_path, version=2)
    assert view.peak_bytes() == 123456
    assert view.current_bytes() == 1000
    assert view.limit() is None
    assert view.oom_kills() == 2
    assert view.pids() == [7, 12]
    (tmp_path / "memory.max").write_text("52428800\n")
    assert view.limit() == 50 * MB


def test_paths_are_found_through_mountinfo_even_for_a_container_subtree() -> None:
    proc_cgroup = "12:pids:/a\n4:memory:/docker/abc/task\n0::/docker/abc\n"
    mountinfo = (
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "35 31 0:32 /docker/abc /sys/fs/cgroup/mem\\040ory rw shared:9 - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    assert _cgroup_path(proc_cgroup, 1) == "/docker/abc/task"
    assert _cgroup_path(proc_cgroup, 2) == "/docker/abc"
    memory = [m for m in _mounts(mountinfo) if "memory" in m.super_options]
    assert len(memory) == 1
    assert _join(memory[0], "/docker/abc/task") == "/sys/fs/cgroup/mem ory/task"
    assert _join(memory[0], "/docker/abc") == "/sys/fs/cgroup/mem ory"  # the mount's own root
    unified = next(m for m in _mounts(mountinfo) if m.fstype == "cgroup2")
    assert _join(unified, "/docker/abc") == "/sys/fs/cgroup/unified/docker/abc"
