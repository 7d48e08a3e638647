"""After a crash: the instances a crashed service left between its two submission steps."""

from __future__ import annotations

import contextlib
import time

from sqlalchemy import select

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ledger import TaskInstance
from jobfleet.core.host.service.context import RunContext, S, load_instances
from jobfleet.core.host.service.reports import ingest_events
from jobfleet.core.host.service.retries import Round, commit, end


def recover_unsubmitted(context: RunContext) -> None:
    """Instances a crashed service left in I: submitted or not, nobody knows their id.

    Reports on the channel prove a launch (and carry the id). For the rest, the specs are
    removed first — a wrapper that starts late then finds nothing to run — and the channel
    is read again (over HTTP, for as long as a live wrapper may take to report, see
    `_await_reports`); whatever is still unaccounted for ends W and is retried.
    """
    ingest_events(context)
    stranded = _instantiated(context)
    if not stranded:
        return
    for instance_id in stranded:
        with contextlib.suppress(JobfleetError):
            context.started_channel().remove(instance_id)
    _await_reports(context)
    with context.ledger.session() as session:
        work = Round()
        for row in load_instances(session, stranded):
            if row.state == S.INSTANTIATED.value:
                end(
                    context,
                    work,
                    row,
                    S.NO_DISTRIBUTOR_ID,
                    "the host stopped while submitting it; its spec was withdrawn",
                    None,
                    free=True,
                )
        commit(context, session, work)


def _await_reports(context: RunContext) -> None:
    """Read the channel until no instance is left in I, or no live wrapper can still report.

    A file channel holds what the wrappers wrote while no host was there: one read finds it.
    Over HTTP, a wrapper that took its spec before the crash holds its RUNNING report until
    the host answers again, retrying at least every `LONGEST_PAUSE` seconds; taking its
    silence for "never launched" at once would run the task a second time.
    """
    ingest_events(context)
    if context.served_channel is None:
        return
    from jobfleet.core.channel.http import LONGEST_PAUSE

    deadline = time.monotonic() + 2 * LONGEST_PAUSE + 1.0
    while _instantiated(context) and time.monotonic() < deadline:
        time.sleep(0.2)
        ingest_events(context)


def _instantiated(context: RunContext) -> list[int]:
    with context.ledger.read_session() as session:
        return list(
            session.scalars(
                select(TaskInstance.id).where(
                    TaskInstance.run_id == context.run_id,
                    TaskInstance.state == S.INSTANTIATED.value,
                )
            ).all()
        )
