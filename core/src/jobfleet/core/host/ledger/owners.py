"""Whether a run's owner (the service holding its lease) is at work, gone, or expired.

Plain Python on a run's `owner_token` and `lease_expires_at`, without SQLAlchemy: the ORM's
`Run` and the rows `host/quick_read.py` reads with the stdlib are judged by the same code.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Protocol


class Leased(Protocol):
    """A run as far as its lease goes (a `Run`, or a row read without the ORM)."""

    @property
    def owner_token(self) -> str | None: ...

    @property
    def lease_expires_at(self) -> datetime | None: ...


def lease_is_live(run: Leased, now: datetime | None = None) -> bool:
    """Whether a service holds an unexpired lease on the run and is working on it now: not a
    service of this machine whose process is gone (see `lease_is_orphaned`)."""
    return _lease_unexpired(run, now) and not owner_is_gone(run.owner_token or "")


def lease_is_orphaned(run: Leased, now: datetime | None = None) -> bool:
    """Whether the run's lease is unexpired but its owner is known dead (`owner_is_gone`).

    Nobody drives such a run, though the lease says otherwise until it expires: `--resume`
    and `kill` take it over at once.
    """
    return _lease_unexpired(run, now) and owner_is_gone(run.owner_token or "")


def owner_is_gone(owner: str) -> bool:
    """Whether `owner` (a token "host:pid:nonce") is a service of this machine that is gone.

    Gone is no process with that pid, or a zombie: a process killed under a parent (or a PID 1
    in a container) that does not reap it stays in the process table, dead. Owners on other
    machines are never known to be gone: their leases are waited out.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    if not os.path.isdir("/proc/self"):
        return False  # no /proc here (macOS): a process that answers signals counts as alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return True  # it went between the two looks
    except OSError:
        return False
    # "pid (comm) S …": the name may hold spaces and parentheses; the state follows the last ")".
    return stat.rpartition(b")")[2].split()[:1] in ([b"Z"], [b"X"])


def _lease_unexpired(run: Leased, now: datetime | None) -> bool:
    moment = now or datetime.now(UTC)
    return (
        run.owner_token is not None
        and run.lease_expires_at is not None
        and run.lease_expires_at > moment
    )
