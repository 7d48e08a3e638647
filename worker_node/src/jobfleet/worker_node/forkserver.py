"""A small `/bin/sh` process that forks the tasks of a slot worker, so they are not forked from
Python.

Why: a child's `ru_maxrss` starts at its parent's RSS when it forks (with vfork, the one Python's
subprocess uses, at the parent's high-water mark), so every task forked from a ~15 MiB Python
wrapper reports at least ~15 MiB, even `true`. Forked from dash (~1-2 MiB), the floor is dash's.

How: the server reads the path of a *launch file* per line, and for each forks a subshell that
forks the task in the background, prints its pid and exits; the task, orphaned, is re-parented
to the slot worker (a child subreaper), which `wait4`s it and so gets its exit status and its
rusage as if it had forked it itself. The launch file is written by Python with every word
`shlex.quote`d: the command, its environment and its log paths are never pasted into shell
code. Its last line execs `env -i --default-signal` (an asynchronous list of a shell starts
with SIGINT and SIGQUIT ignored; the task must start with every signal at its default, as one
forked by Python does), then `setsid` (a session and process group of its own), then
`/bin/sh -c COMMAND`, as the one-shot wrapper runs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping

# `( ( . FILE ) & exec echo $! )`: the outer subshell forks the task and exits before the server
# writes "." - so once the worker has read both lines, the task is the worker's child. It execs
# /bin/echo rather than running the builtin: a shell may reap a child that ended already (a
# fast `true`) before it exits itself, and the worker would lose the task's status and rusage;
# /bin/echo reaps nothing.
_SERVER = 'while IFS= read -r launch; do ( ( . "$launch" ) & exec /bin/echo "$!" ); echo .; done'

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
            ["/bin/sh", "-c", _SERVER],
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
        try:
            stdin.write(launch_file.encode() + b"\n")
            stdin.flush()
            pid_line, done_line = stdout.readline(), stdout.readline()
        except (BrokenPipeError, ValueError) as exc:
            self.dead = True
            raise ForkServerError(f"the fork server is gone: {exc}") from exc
        if not pid_line.strip().isdigit() or done_line != b".\n":
            self.dead = True
            raise ForkServerError(f"the fork server answered {pid_line!r} {done_line!r}")
        return int(pid_line)

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
        if cgroup_procs is not None:
            # "0" is the writing process itself: the subshell that is about to exec the task,
            # so the command is inside its cgroup before it runs an instruction of its own.
            lines.append(f"echo 0 >{quote(cgroup_procs)} || exit {JOIN_FAILED_EXIT_CODE}")
        assignments = " ".join(quote(f"{name}={value}") for name, value in environment.items())
        lines.append(
            f"exec {quote(self.env_path)} -i --default-signal -- {assignments} "
            f"{quote(self.setsid_path)} /bin/sh -c {quote(command)}"
        )
        return "\n".join(lines) + "\n"


def usable_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The variables `env` can set: a name with "=" or a NUL cannot be passed (nor by exec)."""
    return {
        name: value
        for name, value in environment.items()
        if name and "=" not in name and "\0" not in name and "\0" not in value
    }
