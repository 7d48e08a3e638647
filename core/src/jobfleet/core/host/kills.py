"""Killing a run or single task instances: what `jobfleet kill` and Ctrl-C on `jobfleet run` do.

A kill is only a request written to the ledger (`runs.kill_requested_at`,
`task_instances.kill_requested_at`): the service that owns the run carries it out in its next
round (see service/kills.py). When no service owns the run — none has it, its lease expired, or
its owner was a service of this machine whose process is gone (an orphaned run) — `kill` starts
one to carry it out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host import queries
from jobfleet.core.host.ledger import (
    FINAL_RUN_STATUSES,
    InstanceState,
    LeaseError,
    Ledger,
    Run,
    TaskInstance,
    in_batches,
    lease_is_live,
    utcnow,
)
from jobfleet.core.host.service import DistributorService

# How often `kill --wait` looks whether the owner carried the kill out.
_WAIT_INTERVAL: Final = 0.2
_FINAL_INSTANCE_STATES: Final = [state.value for state in InstanceState if state.is_final]


@dataclass(frozen=True)
class KillResult:
    """What came of a kill, as `jobfleet kill` reports it."""

    run_id: int
    status: str | None
    """The run's status afterwards."""
    killed: list[int]
    """The instances (of those asked for, or of the run) that were killed, by id."""
    carried_out_here: bool
    """No service owned the run: this process carried the kill out."""


def kill(
    ledger: Ledger,
    run_ref: str | None,
    instance_ids: Sequence[int] = (),
    *,
    wait: bool = True,
    timeout: float = 120.0,
) -> KillResult:
    """Kill the run `run_ref`, or only the instances `instance_ids` (of one run).

    The run's owner, if it has a live one, carries the kill out (waited for with `wait`, up to
    `timeout` seconds); otherwise (also when the owner is known dead) it is carried out here,
    before this returns.
    """
    run_id = request_kill(ledger, run_ref, instance_ids)
    owned = owner_is_alive(ledger, run_id)
    if not owned:
        try:
            carry_out_kill(ledger, run_id, whole_run=not instance_ids)
        except LeaseError:
            owned = True  # a service took the run meanwhile (`--resume`): it carries it out
    if owned and wait:
        wait_killed(ledger, run_id, instance_ids, timeout)
    with ledger.read_session() as session:
        killed = _killed(session, run_id, instance_ids)
        status = queries.run_status(session, run_id)
    return KillResult(run_id, status, killed, carried_out_here=not owned)


def request_kill(ledger: Ledger, run_ref: str | None, instance_ids: Sequence[int]) -> int:
    """Write the kill request (of the instances, else of the run); returns the run's id."""
    with ledger.session() as session:
        if instance_ids:
            return _request_instance_kills(session, run_ref, instance_ids)
        if run_ref is None:
            raise JobfleetError("Name a run, or task instances, to kill.")
        run = queries.find_run(session, run_ref)
        if run.status in FINAL_RUN_STATUSES:
            raise JobfleetError(f"Run {run.id} is already over ({run.status}).")
        if run.kill_requested_at is None:
            run.kill_requested_at = utcnow()
        return run.id


def _request_instance_kills(
    session: Session, run_ref: str | None, instance_ids: Sequence[int]
) -> int:
    run_ids = set()
    for instance_id in instance_ids:
        instance = queries.find_instance(session, instance_id)
        run_ids.add(instance.run_id)
        if instance.kill_requested_at is None:
            instance.kill_requested_at = utcnow()
    if len(run_ids) > 1:
        raise JobfleetError("The instances belong to different runs: kill them one run at a time.")
    run_id = run_ids.pop()
    if run_ref is not None and queries.find_run(session, run_ref).id != run_id:
        raise JobfleetError(f"The instances are not of run {run_ref}.")
    return run_id


def request_run_kill(ledger: Ledger, run_id: int) -> None:
    """Ask for the whole run to be killed (an earlier request keeps its time)."""
    with ledger.session() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.kill_requested_at.is_(None))
            .values(kill_requested_at=utcnow())
        )


def owner_is_alive(ledger: Ledger, run_id: int) -> bool:
    """Whether a live service holds an unexpired lease on the run (and so carries out its
    kills); an owner of this machine whose process is gone is not alive."""
    with ledger.read_session() as session:
        return lease_is_live(session.get_one(Run, run_id))


def carry_out_kill(ledger: Ledger, run_id: int, *, whole_run: bool) -> None:
    """Take the run (nobody owns it, or its owner is dead) and carry the kill requests out; a
    run's kill to its end.

    The service started here is the run's own: its backend and settings come from the run's
    saved options, and it stops what the dead owner had launched (the `multiprocess` backend
    finds its orphaned wrappers by their distributor-id tag).
    """
    with ledger.read_session() as session:
        if queries.run_status(session, run_id) in FINAL_RUN_STATUSES:
            return
    service = DistributorService(ledger, run_id)
    service.start()
    try:
        if whole_run:
            service.run_until_done()
        else:
            service.kill_requested()
    finally:
        service.close()


def wait_killed(ledger: Ledger, run_id: int, instance_ids: Sequence[int], timeout: float) -> None:
    """Wait until the run's owner has carried the kill out; `JobfleetError` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger.read_session() as session:
            if _kill_done(session, run_id, instance_ids):
                return
        time.sleep(_WAIT_INTERVAL)  # polling another process's progress through the ledger
    raise JobfleetError(
        f"The service of run {run_id} has not carried out the kill within {timeout:g} s; "
        f"see `jobfleet events {run_id}`."
    )


def _kill_done(session: Session, run_id: int, instance_ids: Sequence[int]) -> bool:
    """Every instance asked for is over; for a run's kill, the run is."""
    if not instance_ids:
        return queries.run_status(session, run_id) in FINAL_RUN_STATUSES
    for batch in in_batches(instance_ids):
        pending = session.scalar(
            select(TaskInstance.id).where(
                TaskInstance.id.in_(batch), TaskInstance.state.not_in(_FINAL_INSTANCE_STATES)
            )
        )
        if pending is not None:
            return False
    return True


def _killed(session: Session, run_id: int, instance_ids: Sequence[int]) -> list[int]:
    """The run's instances in K (only those asked for, when instances were)."""
    query = select(TaskInstance.id).where(
        TaskInstance.run_id == run_id, TaskInstance.state == InstanceState.KILL_SELF.value
    )
    if not instance_ids:
        return sorted(session.scalars(query))
    killed: list[int] = []
    asked = query.where(TaskInstance.kill_requested_at.is_not(None))
    for batch in in_batches(instance_ids):
        killed.extend(session.scalars(asked.where(TaskInstance.id.in_(batch))))
    return sorted(killed)
