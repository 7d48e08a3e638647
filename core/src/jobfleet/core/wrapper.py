"""The worker-node wrapper as the rest of jobfleet sees it.

Its exit codes and the shared values of its options (which the wrapper itself, the local
backends' settings and the distributors all use), where the wrapper of this installation is,
and the one mapping from how a wrapper process ended to a `RemoteExitInfo`, which every backend
uses when the wrapper's own final report never reached the host.

The wrapper imports this module at start-up: keep it light (no imports beyond the standard
library's cheapest and `jobfleet.core.exit_info`).
"""

from __future__ import annotations

import os
import signal
import sys

from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the start path
    from collections.abc import Mapping
    from typing import Final

# -- exit codes ----------------------------------------------------------------------------------
# When the command ran, the wrapper exits with the command's code (128 + N when signal N ended
# it, as shells do), so a scheduler's accounting shows the task's outcome. Otherwise it exits with
# one of these, chosen above the range shells give meaning to (126, 127, 128 + N up to 192).

WRAPPER_FAILED: Final = 240
"""The wrapper itself failed (no channel, no spec, an internal error); see its final report."""

VERSION_MISMATCH: Final = 241
"""The host speaks another version of the channel protocol than this wrapper."""

USAGE_ERROR: Final = 2
"""The command line was wrong (argparse's own code)."""

NOT_EXECUTABLE: Final = 126
"""The shell's code for a command it found but could not execute."""

NOT_FOUND: Final = 127
"""The shell's code for a command it could not find."""

TRUNCATED_STATUS: Final = 128
"""From here on, the wrapper also prints its exit status on stderr (`status_line`): Slurm's
accounting keeps only 7 bits of a batch job's exit status (240 reads 112, 137 reads 9), so a
backend whose accounting does that reads the whole status from the job's output instead."""

_STATUS_PREFIX: Final = "jobfleet-worker-node: exit status "


def status_line(code: int) -> str:
    """The line the wrapper writes to stderr as it exits with `code`."""
    return f"{_STATUS_PREFIX}{code}\n"


def status_from_output(text: str) -> int | None:
    """The exit status the wrapper stated last in its output (`status_line`), if it did."""
    found = text.rfind(_STATUS_PREFIX)
    if found < 0:
        return None
    digits = text[found + len(_STATUS_PREFIX) :].split("\n", 1)[0].strip()
    return int(digits) if digits.isdigit() and int(digits) < 256 else None


# -- shared option values ------------------------------------------------------------------------

CGROUP_MODES: Final = ("auto", "always", "never")
"""`--cgroup`: a memory cgroup per task when its spec limits memory (auto), always, or never."""

DEFAULT_CGROUP: Final = "auto"

DEFAULT_KILL_GRACE: Final = 10.0
"""Seconds a stopped task gets between SIGTERM and SIGKILL."""

HOST_URL_VARIABLE: Final = "JOBFLEET_HOST_URL"
"""Where a distributor or wrapper given no `host_url` looks for the host channel's address."""

TERMINATION_LOG_VARIABLE: Final = "JOBFLEET_TERMINATION_LOG"
"""A file the wrapper also writes its final exit record to (compact JSON of the final report,
at most `TERMINATION_LOG_LIMIT` bytes), when set: Kubernetes pods set it to their container's
`terminationMessagePath`, so the record survives a report that never reached the host."""

TERMINATION_LOG_LIMIT: Final = 4096
"""The most bytes Kubernetes keeps of a container's termination message."""

TERMINATION_LOG_STARTED: Final = '{"jobfleet":"started"}'
"""What the termination log holds from the wrapper's start until its final record replaces it:
a backend that finds it knows the wrapper itself died (an exit status above 128 then means a
signal killed the wrapper, not that the wrapper passed on its task's signal)."""

CHANNEL_TOKEN_VARIABLE: Final = "JOBFLEET_CHANNEL_TOKEN"  # noqa: S105 - a variable name
"""The run's token for an http channel: the wrapper sends it as `Authorization: Bearer …`. A
backend puts it in the wrapper's environment (never on a command line); a distributor given no
`channel_token=` reads it from here."""

CHANNEL_TOKEN_FILE_VARIABLE: Final = "JOBFLEET_CHANNEL_TOKEN_FILE"  # noqa: S105
"""A file holding the channel token, read when `JOBFLEET_CHANNEL_TOKEN` is unset (a Kubernetes
Secret mounted as a volume)."""

CHANNEL_CA_VARIABLE: Final = "JOBFLEET_CHANNEL_CA"
"""A CA file with which the wrapper checks an https channel's certificate (default: the
system's store)."""

HOST_ONLY_VARIABLES: Final = frozenset(
    {
        "JOBFLEET_LEDGER",
        HOST_URL_VARIABLE,
        "PGPASSWORD",
        CHANNEL_TOKEN_VARIABLE,
        CHANNEL_TOKEN_FILE_VARIABLE,
        CHANNEL_CA_VARIABLE,
        TERMINATION_LOG_VARIABLE,
    }
)
"""The host's own variables, which no task gets (nor a local backend's wrapper, unless the
backend sets them for it): the ledger's URL, which may hold its password; the channel's
address, which the wrapper gets on its command line; libpq's password variable, which the
host's PostgreSQL connection may read; the http channel's token, token file and CA, which
the wrapper reads and its task must not inherit; and the wrapper's termination log, which is
the wrapper's alone. A task that needs one of them names it in its own `env`."""

ENTRY_POINT_VARIABLE: Final = "JOBFLEET_WORKER_NODE"
"""A command (shell words) that starts the wrapper on the nodes, when it is not the one
installed beside this Python: e.g. another virtual environment's on a cluster's shared disk."""


def entry_point_argv() -> list[str]:
    """The command that starts the wrapper: `$JOBFLEET_WORKER_NODE` when set, else the wrapper
    beside this Python, else on PATH, else `python -m` (never relying on PATH when the
    installation has its own script)."""
    import shlex
    import shutil
    from pathlib import Path

    configured = os.environ.get(ENTRY_POINT_VARIABLE, "").strip()
    if configured:
        return shlex.split(configured)
    beside = Path(sys.executable).with_name("jobfleet-worker-node")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("jobfleet-worker-node")
    return [found] if found else [sys.executable, "-m", "jobfleet.worker_node.cli"]


def without_host_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` without the host's own variables (`HOST_ONLY_VARIABLES`)."""
    return {name: value for name, value in environ.items() if name not in HOST_ONLY_VARIABLES}


def check_cgroup_mode(mode: str) -> None:
    """Refuse a `cgroup` setting other than the wrapper's modes, naming them."""
    if mode not in CGROUP_MODES:
        raise ValueError(f"cgroup must be auto, always or never, not {mode!r}")


def check_kill_grace(seconds: float) -> None:
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"kill_grace must be 0 or more seconds, not {seconds}")


# -- how a wrapper process ended, when its report is missing --------------------------------------


def exit_info_from_wrapper(
    exit_code: int | None,
    signal_number: int | None = None,
    *,
    oom_evidence: str | None = None,
    raw_state: str | None = None,
    detail: str = "",
) -> RemoteExitInfo:
    """What a backend reports for an instance whose wrapper ended without a final report.

    `exit_code` is the wrapper process's exit status as the backend saw it (a negative value,
    as `subprocess` gives it, means killed by that signal); `signal_number` the signal that
    killed the wrapper process itself, where the backend reports it apart (Slurm's `0:9`).
    `oom_evidence` says why the backend believes memory ran out (a task cgroup's OOM counter,
    Slurm's OUT_OF_MEMORY, the kernel's OOM kill count); with it, a SIGKILL is an
    out-of-memory kill and the retry gets more memory. `detail` is appended to the message
    (the wrapper's last words, the backend's job id).
    """
    if exit_code is not None and exit_code < 0:
        signal_number, exit_code = -exit_code, None
    if signal_number:
        return _killed(signal_number, oom_evidence, raw_state, detail, wrapper=True)
    if exit_code is None:
        return _result(ExitReason.LOST, "the wrapper's exit status is unknown", raw_state, detail)
    return _wrapper_exited(exit_code, oom_evidence, raw_state, detail)


def _killed(
    number: int,
    oom_evidence: str | None,
    raw_state: str | None,
    detail: str,
    *,
    wrapper: bool,
) -> RemoteExitInfo:
    """A signal ended the wrapper itself (`wrapper`: its task's end is unknown, U) or, as the
    wrapper passed on, its task (E). A SIGKILL with evidence of an OOM kill is Z either way."""
    who = "the worker-node wrapper" if wrapper else "the task"
    if number == signal.SIGKILL and oom_evidence:
        what = f"{who} was killed by SIGKILL: out of memory ({oom_evidence})"
        return _result(ExitReason.OOM, what, raw_state, detail, signal_number=number)
    what = f"{who} was killed by {signal_name(number)}" + (" before it reported" if wrapper else "")
    reason = ExitReason.LOST if wrapper else ExitReason.FAILED
    return _result(reason, what, raw_state, detail, signal_number=number)


def _wrapper_exited(
    code: int, oom_evidence: str | None, raw_state: str | None, detail: str
) -> RemoteExitInfo:
    if code == 0:
        what = "exit code 0 (the wrapper's report was not seen)"
        return _result(ExitReason.COMPLETED, what, raw_state, detail, exit_code=0)
    if code == WRAPPER_FAILED:
        what = f"the worker-node wrapper failed (exit code {code}) before it reported"
        return _result(ExitReason.LOST, what, raw_state, detail, exit_code=code)
    if code == VERSION_MISMATCH:
        what = (
            f"the worker node speaks another channel protocol version (exit code {code}); "
            "install the same jobfleet release on the host and the nodes"
        )
        return _result(ExitReason.LAUNCHER_ERROR, what, raw_state, detail, exit_code=code)
    if code in (NOT_EXECUTABLE, NOT_FOUND):
        problem = "not found" if code == NOT_FOUND else "found but not executable"
        what = (
            f"exit code {code}: the command was {problem}; retrying cannot help, "
            "fix the command or the node's PATH"
        )
        return _result(ExitReason.LAUNCHER_ERROR, what, raw_state, detail, exit_code=code)
    if 128 < code < 128 + signal.NSIG:
        # The wrapper passes on "the task was killed by signal N" as 128 + N.
        return _killed(code - 128, oom_evidence, raw_state, detail, wrapper=False)
    return _result(ExitReason.FAILED, f"exit code {code}", raw_state, detail, exit_code=code)


def _result(
    reason: ExitReason,
    what: str,
    raw_state: str | None,
    detail: str,
    *,
    exit_code: int | None = None,
    signal_number: int | None = None,
) -> RemoteExitInfo:
    message = f"{reason.value}: {what}" + (f"; {detail}" if detail else "")
    record = ExitRecord(
        reason,
        exit_code=exit_code,
        signal=signal_number,
        raw_state=raw_state,
        message=message,
    )
    state: ErrorState = reason.default_error_state
    return RemoteExitInfo(state, message, record=record)


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal 40` for a number without a name (real-time signals)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
