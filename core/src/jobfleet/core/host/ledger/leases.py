"""Run ownership: one service at a time, through a lease that a crashed owner loses.

Each function is one conditional UPDATE, so two services racing for a run cannot both win
(on PostgreSQL the row lock serialises them; on SQLite the write lock does).
Times come from the caller's clock: services sharing a PostgreSQL ledger need synchronised
clocks (NTP), and leases much longer than the skew (the default is a minute).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from jobfleet.core.host.ledger.errors import LeaseError, LedgerError
from jobfleet.core.host.ledger.models import Run, utcnow

DEFAULT_LEASE = timedelta(seconds=60)


def acquire_lease(
    session: Session,
    run_id: int,
    owner: str,
    *,
    duration: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> datetime:
    """Take (or renew) the run for `owner`; returns the new expiry.

    Succeeds when the run is free, already `owner`'s, or its owner's lease has expired (a
    crashed service); raises `LeaseError` naming the current owner otherwise.
    """
    moment = now or utcnow()
    claimable = or_(
        Run.owner_token.is_(None),
        Run.owner_token == owner,
        Run.lease_expires_at.is_(None),
        Run.lease_expires_at <= moment,
    )
    return _set_lease(session, run_id, owner, moment + duration, claimable, "cannot be taken")


def renew_lease(
    session: Session,
    run_id: int,
    owner: str,
    *,
    duration: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> datetime:
    """Extend `owner`'s lease; raises `LeaseError` if it has expired or been taken over.

    An owner whose lease expired must stop: another service may own the run now. It may call
    `acquire_lease` to try again, which only succeeds if nobody took the run meanwhile.
    """
    moment = now or utcnow()
    still_held = (Run.owner_token == owner) & (Run.lease_expires_at > moment)
    return _set_lease(session, run_id, owner, moment + duration, still_held, "lease lost")


def take_over_lease(
    session: Session,
    run_id: int,
    owner: str,
    *,
    previous: str,
    duration: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> datetime:
    """Take the run from `previous` before its lease expires; returns the new expiry.

    Only for an owner known to be dead (`owner_is_gone`: a service of this machine whose
    process is gone).
    Raises `LeaseError` when `previous` no longer holds the run: someone else took it first.
    """
    moment = now or utcnow()
    still_previous = Run.owner_token == previous
    return _set_lease(
        session, run_id, owner, moment + duration, still_previous, "cannot be taken over"
    )


def release_lease(session: Session, run_id: int, owner: str) -> None:
    """Give the run up (at a clean stop); does nothing if `owner` no longer holds it."""
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.owner_token == owner)
        .values(owner_token=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def lease_is_live(run: Run, now: datetime | None = None) -> bool:
    """Whether a service holds an unexpired lease on the run and is working on it now: not a
    service of this machine whose process is gone (see `lease_is_orphaned`)."""
    return _lease_unexpired(run, now) and not owner_is_gone(run.owner_token or "")


def lease_is_orphaned(run: Run, now: datetime | None = None) -> bool:
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


def _lease_unexpired(run: Run, now: datetime | None) -> bool:
    moment = now or utcnow()
    return (
        run.owner_token is not None
        and run.lease_expires_at is not None
        and run.lease_expires_at > moment
    )


def _set_lease(
    session: Session,
    run_id: int,
    owner: str,
    expires: datetime,
    condition: ColumnElement[bool],
    what: str,
) -> datetime:
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, condition)
        .values(owner_token=owner, lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        _refresh(session, run_id)
        return expires
    row = session.execute(
        select(Run.owner_token, Run.lease_expires_at).where(Run.id == run_id)
    ).one_or_none()
    if row is None:
        raise LedgerError(f"Run {run_id} is not in the ledger.")
    raise LeaseError(run_id, row.owner_token, row.lease_expires_at, f"{what} by {owner!r}")


def _refresh(session: Session, run_id: int) -> None:
    # A Run object already loaded in this session would otherwise show the old owner.
    run = session.identity_map.get(identity_key(Run, run_id))
    if run is not None:
        session.refresh(run, ["owner_token", "lease_expires_at"])
