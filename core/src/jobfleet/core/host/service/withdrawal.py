"""Withdrawing the specs of ended attempts from the channel: a spec holds its task's `env`.

An attempt that ended (in any final state) never runs again — a retry is a new instance with
a spec of its own — so its spec is removed once its end is committed, and an array's file
(the specs of all its steps) once every step has ended. A wrapper of it that starts late finds
nothing to run, as after the withdrawal on resume (recovery.py). `retries.commit` notes the
attempts that end; they are withdrawn after the round, when their ends are committed. A
service that stopped in between leaves some specs behind: the next one withdraws every ended
attempt's at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ledger import TaskInstance, in_batches
from jobfleet.core.host.service.context import RunContext, S

log = logging.getLogger(__name__)

_ENDED: Final = tuple(state.value for state in S if state.is_final)


def withdraw_ended(context: RunContext) -> None:
    """Withdraw the specs of the attempts that ended since the last call."""
    if not context.ended:
        return
    noted = sorted(context.ended)
    context.ended.clear()
    # Only those whose end is committed: a step that failed half way rolled its ends back.
    _withdraw(context, [TaskInstance.id.in_(chunk) for chunk in in_batches(noted)])


def withdraw_all_ended(context: RunContext) -> None:
    """At start: withdraw the spec of every ended attempt of the run (and of every array over),
    including those a service that stopped abruptly left behind."""
    context.ended.clear()
    _withdraw(context, [TaskInstance.run_id == context.run_id])


def _withdraw(context: RunContext, conditions: Iterable[ColumnElement[bool]]) -> None:
    """Remove the specs of the ended instances each condition selects, and their arrays' files
    once every step of the array has ended."""
    with context.ledger.read_session() as session:
        rows = [
            row
            for condition in conditions
            for row in session.execute(
                select(TaskInstance.id, TaskInstance.array_id).where(
                    condition, TaskInstance.state.in_(_ENDED)
                )
            )
        ]
        arrays = _arrays_over(session, {row.array_id for row in rows if row.array_id is not None})
    _remove(context, [row.id for row in rows], arrays)


def _arrays_over(session: Session, arrays: set[int]) -> list[int]:
    """The arrays among `arrays` none of whose steps is still to end."""
    live = {
        array_id
        for chunk in in_batches(sorted(arrays))
        for array_id in session.scalars(
            select(TaskInstance.array_id)
            .where(TaskInstance.array_id.in_(chunk), TaskInstance.state.not_in(_ENDED))
            .distinct()
        )
    }
    return sorted(arrays - live)


def _remove(context: RunContext, instance_ids: Iterable[int], arrays: Iterable[int]) -> None:
    channel = context.started_channel()
    try:
        for instance_id in instance_ids:
            channel.remove_spec(instance_id)
        for array_id in arrays:
            channel.remove_array(array_id, 0)  # the service submits every array as batch 0
    except (JobfleetError, OSError) as exc:
        # The run goes on: a spec left behind is a file too many, not a wrong result.
        log.warning(
            "run %s: could not withdraw the specs of ended attempts: %s", context.run_id, exc
        )
