"""Errors the ledger raises on purpose."""

from __future__ import annotations

from datetime import datetime

from jobfleet.core.errors import JobfleetError


class LedgerError(JobfleetError):
    """The ledger could not be opened, migrated or changed as asked."""


class TransitionError(LedgerError):
    """A task instance was asked to move between two states that the table forbids."""

    def __init__(self, instance_id: int | None, from_state: str, to_state: str, why: str) -> None:
        super().__init__(
            f"Task instance {instance_id} cannot go from {from_state} to {to_state}: {why}."
        )
        self.instance_id = instance_id
        self.from_state = from_state
        self.to_state = to_state


class LeaseError(LedgerError):
    """A run is owned by another service whose lease has not expired (or the lease was lost)."""

    def __init__(self, run_id: int, owner: str | None, expires: datetime | None, what: str) -> None:
        held = f"owned by {owner!r} until {expires:%Y-%m-%d %H:%M:%S} UTC" if expires else "free"
        super().__init__(f"Run {run_id}: {what}; it is {held}.")
        self.run_id = run_id
        self.owner = owner
        self.expires = expires
