"""Where a run stands after a round, and its end once no task is pending."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jobfleet.core.host import queries
from jobfleet.core.host.ledger import Run, RunStatus, TaskState, utcnow
from jobfleet.core.host.service.context import RunContext


@dataclass(frozen=True)
class Progress:
    """Where a run stands after a round: what `jobfleet run` shows."""

    run_id: int
    status: RunStatus
    task_counts: Mapping[str, int]
    state_counts: Mapping[str, int]
    changed: bool

    @property
    def tasks_total(self) -> int:
        return sum(self.task_counts.values())

    @property
    def tasks_over(self) -> int:
        return self.tasks_total - self.task_counts.get(TaskState.PENDING.value, 0)


def take_stock(context: RunContext, changed: bool) -> Progress:
    """The run's counts; the run is finished here when no task is pending any more."""
    with context.ledger.read_session() as session:
        task_counts = queries.task_counts(session, context.run_id)
        state_counts = queries.state_counts(session, context.run_id)
    status = RunStatus.RUNNING
    if not task_counts.get(TaskState.PENDING.value):
        status = _finish(context, task_counts)
    return Progress(context.run_id, status, task_counts, state_counts, changed)


def _finish(context: RunContext, task_counts: Mapping[str, int]) -> RunStatus:
    with context.ledger.session() as session:
        run = session.get_one(Run, context.run_id)
        if run.kill_requested_at is not None:
            status = RunStatus.KILLED
        elif task_counts.get(TaskState.FAILED.value) or task_counts.get(TaskState.KILLED.value):
            status = RunStatus.FAILED
        else:
            status = RunStatus.DONE
        run.status = status.value
        run.finished_at = utcnow()
    return status
