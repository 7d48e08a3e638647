"""A small `/bin/sh` process that forks the tasks of a slot worker, so they are not forked from
Python.

Why: a child's `ru_maxrss` starts at its parent's RSS when it forks (with vfork, the one Python's
subprocess uses, at the parent's high-water mark), so every task forked from a ~15 MiB Python
wrapper reports at least ~15 MiB, even `true`. Forked from dash (~1-2 MiB), the floor is dash's.

How: the server reads the path of a *launch file* per line, and for each runs it in a subshell
(not in the background: an asynchronous list starts with SIGINT and SIGQUIT ignored, and dash
gives no way to undo that), waits for it, and prints its exit status. The launch file sets the
task's redirections and environment in the subshell, then execs `setsid --fork /bin/sh -c
COMMAND`: setsid forks the task into a session and process group of its own and exits, so the
task, orphaned, is re-parented to the slot worker (a child subreaper), which finds it as its
one new child, and `wait4`s it, so getting its exit status and its rusage as if it had forked
it itself. Per task: two forks and two execs (setsid, the task's shell), no helper process.

The launch file is written by Python with every word `shlex.quote`d: the command, its
environment and its log paths are never pasted into shell code. The environment is set with
`unset`/`export` of quoted assignments when every name is a plain shell identifier a shell
lets one export; otherwise `env -i` sets it (one exec more). The server itself is started
through `env --default-signal` (once per worker): the task starts with every signal at its
default, whatever the worker inherited.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping

# The subshell ends as setsid's parent half exits, after its child (the task) was re-parented
# to the worker: once the worker has read the status line, the task is the worker's child, and
# the server's shell never saw it (so cannot reap it before the worker does).
_SERVER = 'while IFS= read -r launch; do ( . "$launch" ); echo "$?"; done'

_SERVER_VARIABLES = ("PATH", "PWD")
"""What the server's shell exports (PWD: dash exports it on its own): unset for every task."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_NOT_EXPORTABLE = frozenset({"OPTIND", "PPID", "UID", "EUID", "SHELLOPTS", "BASHOPTS"})
"""Names a shell refuses to export a string as (dash checks OPTIND is a number; bash, as
/bin/sh, has the others read-only): a task whose environment has one gets `env -i`."""

JOIN_FAILED_EXIT_CODE = 125
"""The task's exit code when it could not join its cgroup (as `cgroup.wrap_argv`'s)."""


class ForkServerError(OSError):
    """The fork server could not start a task (it is gone, or said something unexpected)."""


class ForkServer:
    """One `/bin/sh` fork server; `launch()` starts a task from a launch file, returns its pid."""

    def __init__(self) -> None:
        env_path = shutil.which("env")
        setsid_path = shutil.which("setsid")
        if env_path is None or setsid_path is None:
            raise ForkServerError("the fork server needs env and setsid on PATH")
        self.env_path = env_path
        self.setsid_path = setsid_path
        self._process = subprocess.Popen(
            [env_path, "--default-signal", "/bin/sh", "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.defpath},
            # Its cwd and stderr are the worker's: a task's cwd is the wrapper's, as one-shot.
        )
        self.dead = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def launch(self, launch_file: str) -> int:
        """Start the task the launch file describes; its pid (a child of this process now)."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        if self.dead:
            raise ForkServerError("the fork server is gone")
        before = own_children()
        try:
            stdin.write(launch_file.encode() + b"\n")
            stdin.flush()
            status_line = stdout.readline()
        except (BrokenPipeError, ValueError) as exc:
            self.dead = True
            raise ForkServerError(f"the fork server is gone: {exc}") from exc
        if not status_line.strip().isdigit():
            self.dead = True
            raise ForkServerError(f"the fork server answered {status_line!r}")
        new = own_children() - before - {self.pid}
        if len(new) > 1:  # an orphan of an earlier task adopted meanwhile: the task leads a session
            new = {pid for pid in new if _session_of(pid) == pid}
        if len(new) != 1:
            # No task: its redirections or setsid failed (said on the worker's stderr).
            raise ForkServerError(
                f"the task could not be started (its launch ended with status "
                f"{int(status_line)} and started {len(new)} processes)"
            )
        return new.pop()

    def rss(self) -> int | None:
        """Its RSS in bytes now: a task's ru_maxrss starts there (the fork floor)."""
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """End it: end-of-file on its stdin ends its loop."""
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            self._process.kill()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self.dead = True

    def launch_script(
        self,
        command: str,
        environment: Mapping[str, str],
        stdout_path: str,
        stderr_path: str,
        cgroup_procs: str | None,
    ) -> str:
        """The launch file's text: every word quoted, nothing of the task's pasted as code."""
        quote = shlex.quote
        lines = [f"exec </dev/null >>{quote(stdout_path)} 2>>{quote(stderr_path)}"]
        task = f"{quote(self.setsid_path)} --fork /bin/sh -c"
        if cgroup_procs is not None:
            # "0" is the writing process itself: the subshell that is about to exec setsid,
            # which forks the task inside the cgroup before it runs an instruction of its own.
            # If it cannot join, a stand-in task ends with the code that says so.
            lines.append(
                f"echo 0 >{quote(cgroup_procs)} || "
                f"exec {task} {quote(f'exit {JOIN_FAILED_EXIT_CODE}')}"
            )
        assignments = " ".join(quote(f"{name}={value}") for name, value in environment.items())
        if all(_exportable(name) for name in environment):
            lines.append(f"unset {' '.join(_SERVER_VARIABLES)}")
            if assignments:
                lines.append(f"export {assignments}")
            lines.append(f"exec {task} {quote(command)}")
        else:
            lines.append(f"exec {quote(self.env_path)} -i -- {assignments} {task} {quote(command)}")
        return "\n".join(lines) + "\n"


def own_children() -> set[int]:
    """This process's children, zombies included (read from /proc/self/task/*/children)."""
    children: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        path = f"/proc/self/task/{tid}/children"
        with contextlib.suppress(OSError, ValueError), open(path, "rb") as listing:
            children.update(int(pid) for pid in listing.read().split())
    return children


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
        return int(data[data.rindex(b")") + 2 :].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _exportable(name: str) -> bool:
    return bool(_IDENTIFIER.fullmatch(name)) and name not in _NOT_EXPORTABLE


def usable_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The variables `env` can set: a name with "=" or a NUL cannot be passed (nor by exec)."""
    return {
        name: value
        for name, value in environment.items()
        if name and "=" not in name and "\0" not in name and "\0" not in value
    }
