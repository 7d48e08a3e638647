"""Long-lived slot workers of the local distributors: `jobfleet-worker-node slot` processes.

A worker runs one task instance at a time, sent as a JSON line on its stdin, and answers with a
`done` line on its stdout once the task has ended and its final report is durable (the protocol
is in `jobfleet.worker_node.slot`). One reader thread per worker turns its lines into calls of
the distributor's `on_done`, and its end-of-file (the worker died, or left) into `on_exit`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobfleet.core import process_tree

SLOT_MARKER = "JOBFLEET_SLOT_WORKER"
"""In a slot worker's environment (as /proc shows it), never in its tasks': the marker by
which a restarted host's distributor finds the worker above an adopted task."""

_TAG = "JOBFLEET_DISTRIBUTOR_ID"

SLOT_WORK_DIR = "JOBFLEET_SLOT_WORK_DIR"
"""Where a slot worker keeps its scratch files (launch files, output of tasks that keep no
log): a directory of the distributor's. Read and removed from its environment at start."""


@functools.cache
def fork_server_tools_missing() -> str | None:
    """What this machine lacks for the slot workers' fork server, or None when it has it all.

    The fork server starts tasks with `setsid --fork` (util-linux 2.35 and later) and itself
    through `env --default-signal` (coreutils 8.31 and later); without them every task would
    fail to start, so the local distributors use one-shot wrappers instead (and say why once).
    """
    for tool, option in (("setsid", "--fork"), ("env", "--default-signal")):
        path = shutil.which(tool)
        if path is None:
            return f"no {tool} on PATH"
        try:
            shown = subprocess.run(
                [path, "--help"], capture_output=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{path} --help failed: {exc}"
        if option.encode() not in shown:
            return f"{path} has no {option} option (too old)"
    return None


def warn_slots_off(reason: str) -> None:
    sys.stderr.write(
        f"jobfleet: slot workers are off on this machine ({reason}); "
        "each task gets a wrapper process of its own\n"
    )


class SlotWorker:
    """One slot worker process, the task instance it runs (if any) and its reader thread."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        on_done: Callable[[SlotWorker, str, int], None],
        on_exit: Callable[[SlotWorker, int], None],
        lock_fd: int | None = None,
    ) -> None:
        self.log = log
        self.job: Any = None  # the distributor's job it runs, set and cleared under its lock
        self._write_lock = threading.Lock()
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                # The work directory's lock (an flock, shared by every copy of the descriptor):
                # a worker that outlives a crashed host keeps its scratch directory, inside the
                # work directory, from being removed as abandoned while it still runs a task.
                pass_fds=() if lock_fd is None else (lock_fd,),
            )
        self._on_done, self._on_exit = on_done, on_exit
        self._reader = threading.Thread(
            target=self._read, name=f"jobfleet-slot-{self.process.pid}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> bool:
        """Write one request; False when the worker is gone (its reader reports the end)."""
        assert self.process.stdin is not None
        try:
            with self._write_lock:
                self.process.stdin.write(json.dumps(message).encode() + b"\n")
                self.process.stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        """End-of-file on its stdin: it leaves once its task, if any, has ended."""
        with self._write_lock, contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()

    def kill(self) -> None:
        """SIGKILL it and everything below it (its fork server, its task)."""
        process_tree.kill_pids([*process_tree.descendant_pids(self.pid), self.pid])

    def join(self, timeout: float) -> bool:
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
                if message.get("op") == "done":
                    self._on_done(self, str(message["id"]), int(message["code"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not the protocol: the worker's own log has what went wrong
        self.process.stdout.close()
        self._on_exit(self, self.process.wait())


def is_slot_worker(pid: int) -> bool:
    """Whether process `pid` is a slot worker (its environment at start has the marker)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            variables = environ.read().split(b"\0")
    except OSError:
        return False
    prefix = f"{SLOT_MARKER}=".encode()
    return any(variable.startswith(prefix) for variable in variables)


def workers_above(pids: list[int]) -> list[int]:
    """`pids`, each replaced by its parent where that is a slot worker: a task of a worker is
    stopped through it, as a one-shot task through its wrapper, so that the worker reports K."""
    chosen: list[int] = []
    for pid in pids:
        parent = process_tree.parent_pid(pid)
        chosen.append(parent if parent is not None and is_slot_worker(parent) else pid)
    return list(dict.fromkeys(chosen))


def running_marker(distributor_id: str) -> str:
    """The name of the memfd a slot worker holds open while it runs an instance, from its
    start to its `done` (its final report durable): /proc/<worker>/fd shows it."""
    return f"{_TAG}={distributor_id}"


def workers_running(distributor_ids: list[str]) -> dict[str, list[int]]:
    """The slot workers (of any distributor) that run one of the ids now, found by the memfd
    each holds while it does (`running_marker`); one scan of /proc."""
    wanted = {f"/memfd:{running_marker(i)} (deleted)": i for i in distributor_ids}
    found: dict[str, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or not is_slot_worker(int(entry)):
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target in wanted:
                found.setdefault(wanted[target], []).append(int(entry))
    return found


def wait_gone(pids: list[int], deadline: float) -> None:
    """Wait until the processes (not our children) have ended, or `deadline` (monotonic)."""
    import select
    import time

    fds: list[int] = []
    for pid in pids:
        with contextlib.suppress(OSError):  # gone already
            fds.append(os.pidfd_open(pid))
    try:
        for fd in fds:
            poller = select.poll()
            poller.register(fd, select.POLLIN)  # readable once the process has exited
            poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
    finally:
        for fd in fds:
            os.close(fd)


def worker_environment(base: dict[str, str], marker: str, work_dir: str) -> dict[str, str]:
    env = dict(base)
    env[SLOT_MARKER] = marker
    env[SLOT_WORK_DIR] = work_dir
    return env


__all__ = [
    "SLOT_MARKER",
    "SLOT_WORK_DIR",
    "SlotWorker",
    "is_slot_worker",
    "running_marker",
    "wait_gone",
    "worker_environment",
    "workers_above",
    "workers_running",
]
