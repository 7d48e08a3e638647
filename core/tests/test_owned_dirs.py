"""Directories owned by a live process: the one of an owner killed with SIGKILL is abandoned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from jobfleet.core.owned_dirs import abandoned_directories, make_owned_directory, remove_abandoned

OWNER = """\
import sys
from pathlib import Path
from jobfleet.core.owned_dirs import make_owned_directory
owned = make_owned_directory("jobfleet-local-", parent=Path(sys.argv[1]))
print(owned.path, flush=True)
sys.stdin.read()
"""


def start_owner(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    return owner, Path(owner.stdout.readline().strip())


def test_the_directory_of_a_killed_owner_is_abandoned_and_a_live_ones_is_not(
    tmp_path: Path,
) -> None:
    killed, dead_dir = start_owner(tmp_path)
    alive, live_dir = start_owner(tmp_path)
    mine = make_owned_directory("jobfleet-local-", parent=tmp_path)
    lockless = tmp_path / "jobfleet-local-being-made"  # no lock file: never taken for dead
    lockless.mkdir()
    try:
        assert list(abandoned_directories("jobfleet-local-*", parent=tmp_path)) == []
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert list(abandoned_directories("jobfleet-local-*", parent=tmp_path)) == [dead_dir]
        assert remove_abandoned("jobfleet-local-*", parent=tmp_path) == [dead_dir]
        assert not dead_dir.exists()
        assert [path.is_dir() for path in (live_dir, mine.path, lockless)] == [True] * 3
    finally:
        alive.kill()
        alive.wait()
        mine.release()
    assert {path.name for path in abandoned_directories("jobfleet-*", parent=tmp_path)} == {
        live_dir.name,
        mine.path.name,
    }


def test_an_owned_directory_is_owner_only(tmp_path: Path) -> None:
    owned = make_owned_directory("jobfleet-local-", parent=tmp_path)
    try:
        assert owned.path.stat().st_mode & 0o777 == 0o700
        assert sorted(path.name for path in owned.path.iterdir()) == ["lock"]
        assert (owned.path / "lock").stat().st_mode & 0o777 == 0o600
    finally:
        owned.release()
