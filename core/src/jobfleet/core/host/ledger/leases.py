"""Run ownership: one service at a time, through a lease that a crashed owner loses.

Each function is one conditional UPDATE, so two services racing for a run cannot both win
(on PostgreSQL the row lock serialises them; on SQLite the write lock does).
Times come from the caller's clock: services sharing a PostgreSQL ledger need synchronised
clocks (NTP), and leases much longer than the skew (the default is a minute).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from jobfleet.core.host.ledger.errors import LeaseError, LedgerError
from jobfleet.core.host.ledger.models import Run, utcnow
from jobfleet.core.host.ledger.owners import lease_is_live, lease_is_orphaned, owner_is_gone

__all__ = [
    "DEFAULT_LEASE",
    "acquire_lease",
    "lease_is_live",
    "lease_is_orphaned",
    "owner_is_gone",
    "release_lease",
    "renew_lease",
    "take_over_lease",
]

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
