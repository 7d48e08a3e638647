"""Finding processes by an environment tag: `pids_by_tag`, `pids_tagged`, `topmost`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobfleet.core import process_tree
from jobfleet.core.testing.host import wait_for

if not Path("/proc/self/environ").exists():
    pytest.skip("finding processes by their environment needs /proc", allow_module_level=True)

# Says it is running (an empty line), then sleeps until its stdin closes (or the test kills it),
# so a failing test leaves nothing behind. The line matters: `Popen` returns once the exec has
# begun, before the kernel has set up the new program's environment, and a scan of
# /proc/<pid>/environ in between reads nothing.
WAITS = "import sys; print(flush=True); sys.stdin.read()"

# Says it is running, starts a child of the same tag, and waits; the child prints its own pid
# once it runs, then waits too.
PARENT = (
    "import subprocess, sys; print(flush=True); "
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import os, sys; print(os.getpid(), flush=True); sys.stdin.read()']); "
    "sys.stdin.read(); child.kill(); child.wait()"
)


@pytest.fixture
def variable() -> str:
    """A variable of this test's own, so that nothing else on the machine carries it."""
    return f"JOBFLEET_TEST_TAG_{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], code: str = WAITS) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        started.append(process)
        if code in (WAITS, PARENT):
            assert process.stdout is not None
            process.stdout.readline()  # it runs: its environment can be read
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_one_scan_finds_each_tag_and_only_live_tagged_processes(variable, spawn, monkeypatch):
    a1 = spawn({variable: "a"})
    a2 = spawn({variable: "a"})
    b = spawn({variable: "b"})
    other_value = spawn({variable: "c"})
    untagged = spawn({})
    prefixed = spawn({f"{variable}_MORE": "a", f"X{variable}": "a"})
    scans = []
    listdir = os.listdir

    def counting(path: str = ".") -> list[str]:
        if path == "/proc":
            scans.append(path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    found = process_tree.pids_by_tag(variable, ["a", "b", "d"])
    assert len(scans) == 1
    assert {value: sorted(pids) for value, pids in found.items()} == {
        "a": sorted([a1.pid, a2.pid]),
        "b": [b.pid],
    }
    everything = {pid for pids in found.values() for pid in pids}
    assert not everything & {other_value.pid, untagged.pid, prefixed.pid}


def test_no_values_means_no_scan(variable, monkeypatch):
    monkeypatch.setattr(os, "listdir", lambda path=".": pytest.fail("scanned /proc"))
    assert process_tree.pids_by_tag(variable, []) == {}


def test_a_zombie_is_not_live(variable, spawn):
    zombie = spawn({variable: "z"}, code="pass")
    # Exited but not reaped: still listed in /proc, as a zombie.
    wait_for(lambda: _state(zombie.pid) == "Z", "the child to be a zombie", timeout=30)
    assert process_tree.pids_by_tag(variable, ["z"]) == {}
    zombie.wait()


def test_unreadable_and_vanished_processes_are_skipped(variable, spawn, monkeypatch):
    denied = spawn({variable: "a"})
    gone = spawn({variable: "a"})
    readable = spawn({variable: "a"})
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if path == f"/proc/{denied.pid}/environ":
            raise PermissionError(13, "Permission denied", path)
        if path == f"/proc/{gone.pid}/environ":
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(process_tree, "open", guarded_open, raising=False)
    assert process_tree.pids_by_tag(variable, ["a"]) == {"a": [readable.pid]}


def test_pids_tagged_is_the_one_value_case(variable, spawn):
    tagged = spawn({variable: "v"})
    spawn({variable: "w"})
    assert process_tree.pids_tagged(variable, "v") == [tagged.pid]
    assert process_tree.pids_tagged(variable, "nothing") == []


def test_topmost_keeps_the_roots_of_a_tree(variable, spawn):
    parent = spawn({variable: "t"}, code=PARENT)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    loner = spawn({variable: "t"})
    pids = process_tree.pids_by_tag(variable, ["t"])["t"]
    assert sorted(pids) == sorted([parent.pid, child, loner.pid])
    assert sorted(process_tree.topmost(pids)) == sorted([parent.pid, loner.pid])
    assert process_tree.topmost([2**22 + 12345]) == []  # no such process


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            content = stat.read()
    except OSError:
        return None
    return content[content.rfind(b")") + 2 :].split()[0].decode()
