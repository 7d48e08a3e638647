"""Submitting queued instances, grouped into arrays of identical resources.

Each distinct request is fitted to its queue once (validation and coercion are most of the
cost of a submission); a request the queue refuses ends F. Submission is two transactions
around the backend call: Q → I (array and step assigned, specs written), then I → O with the
backend's ids, or W when the backend refused.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from jobfleet.core.channel import TaskSpec
from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.host.ledger import (
    Array,
    Change,
    InstanceState,
    Task,
    TaskInstance,
    apply_changes,
    utcnow,
)
from jobfleet.core.host.ledger.models import Event as LedgerEvent
from jobfleet.core.host.queues import QueueFit, fit_request, request_queue
from jobfleet.core.host.service.context import RunContext, S
from jobfleet.core.host.service.retries import Round, commit, end, event_row
from jobfleet.core.naming import safe_name
from jobfleet.core.resources import ResourceRequest

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    """One array to submit: its ledger id, its (coerced) resources, its instances by step."""

    array_id: int
    resources: dict[str, Any]
    rows: list[Any]


@dataclass
class _Instantiation:
    """What Q → I writes for one round's groups, collected before it is written."""

    now: datetime = field(default_factory=utcnow)
    instantiate: list[Change] = field(default_factory=list)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[Any, str]] = field(default_factory=list)
    """Instances whose queue refused their request, with the message they end F with."""
    batches: list[_Batch] = field(default_factory=list)


class _RowView:
    """The fields `end` reads, for a row fetched by a column query rather than as an object."""

    def __init__(
        self, row: Any, state: InstanceState, resources: Mapping[str, Any] | None = None
    ) -> None:
        self.id = row.id
        self.task_id = row.task_id
        self.attempt = row.attempt
        self.state = state.value
        self.requested_resources = dict(
            resources if resources is not None else row.requested_resources
        )


def submit_queued(context: RunContext) -> bool:
    """Submit up to `submit_batch` queued instances; whether there were any."""
    rows = _queued(context)
    if not rows:
        return False
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        groups[json.dumps(row.requested_resources, sort_keys=True, default=str)].append(row)
    for batch in _instantiate(context, groups):
        _launch(context, batch)
    return True


def _queued(context: RunContext) -> Sequence[Any]:
    with context.ledger.read_session() as session:
        return session.execute(
            select(
                TaskInstance.id,
                TaskInstance.task_id,
                TaskInstance.attempt,
                TaskInstance.requested_resources,
                Task.name,
                Task.command,
                Task.env,
            )
            .join(Task, Task.id == TaskInstance.task_id)
            .where(TaskInstance.run_id == context.run_id, TaskInstance.state == S.QUEUED.value)
            .order_by(TaskInstance.id)
            .limit(context.options.submit_batch)
        ).all()


def _fit(context: RunContext, resources: Mapping[str, Any]) -> QueueFit:
    """The request fitted to its queue, cached per request, because validation and coercion
    are most of the cost of a submission."""
    key = json.dumps(resources, sort_keys=True, default=str)
    if key not in context.fits:
        context.fits[key] = fit_request(context.queues, resources)
    return context.fits[key]


def _instantiate(context: RunContext, groups: Mapping[str, list[Any]]) -> list[_Batch]:
    """Q → I for every group (F where the queue refuses), arrays written; one transaction."""
    plan = _Instantiation()
    with context.ledger.session() as session:
        for group in groups.values():
            fit = _fit(context, group[0].requested_resources)
            if fit.problem is not None:
                _refuse(context, group, fit.problem, plan)
            else:
                _cut_into_arrays(context, session, group, fit, plan)
        apply_changes(session, plan.instantiate)
        if plan.adjustments:
            session.execute(insert(LedgerEvent), plan.adjustments)
        work = Round()
        for row, message in plan.refused:
            end(context, work, _RowView(row, S.INSTANTIATED), S.ERROR_FATAL, message, None)
        commit(context, session, work)
    return plan.batches


def _refuse(context: RunContext, group: Sequence[Any], problem: str, plan: _Instantiation) -> None:
    # Through I, as the transition table wants: the request was checked against the queue.
    for row in group:
        plan.instantiate.append(
            Change(row.id, context.run_id, S.QUEUED, S.INSTANTIATED, "checked against the queue")
        )
        plan.refused.append((row, f"refused: {problem}"))


def _cut_into_arrays(
    context: RunContext, session: Session, group: Sequence[Any], fit: QueueFit, plan: _Instantiation
) -> None:
    """Arrays of at most `array_size` instances, each written to get its id; Q → I with the
    array and step (and an adjustment event where coercion changed the request)."""
    queue_id = context.queue_rows.get(request_queue(fit.coerced))
    size = context.options.array_size
    for start in range(0, len(group), size):
        chunk = list(group[start : start + size])
        array = Array(
            run_id=context.run_id, queue_id=queue_id, resources=fit.coerced, size=len(chunk)
        )
        session.add(array)
        session.flush()
        plan.batches.append(_Batch(array.id, fit.coerced, chunk))
        for step, row in enumerate(chunk):
            plan.instantiate.append(_instantiated(context, row, array.id, step, fit.coerced))
            if fit.adjustments:
                plan.adjustments.append(_adjustment(context, row, fit, plan.now))


def _instantiated(
    context: RunContext, row: Any, array_id: int, step: int, coerced: dict[str, Any]
) -> Change:
    return Change(
        row.id,
        context.run_id,
        S.QUEUED,
        S.INSTANTIATED,
        f"array {array_id} step {step}",
        values={"array_id": array_id, "array_step": step, "requested_resources": coerced},
    )


def _adjustment(context: RunContext, row: Any, fit: QueueFit, now: datetime) -> dict[str, Any]:
    return event_row(
        context.run_id,
        row.id,
        "adjustment",
        " ".join(fit.adjustments),
        now,
        {"from": row.requested_resources, "to": fit.coerced},
    )


def _launch(context: RunContext, batch: _Batch) -> None:
    """Specs to the channel, one submission to the backend, I → O (or W)."""
    ids, failure = _submit(context, batch)
    with context.ledger.session() as session:
        work = Round()
        launched = []
        for step, row in enumerate(batch.rows):
            if step in ids:
                launched.append(
                    Change(
                        row.id,
                        context.run_id,
                        S.INSTANTIATED,
                        S.LAUNCHED,
                        "submitted",
                        values={"distributor_id": ids[step]},
                    )
                )
            else:
                view = _RowView(row, S.INSTANTIATED, batch.resources)
                message = failure or "the backend gave no id"
                end(context, work, view, S.NO_DISTRIBUTOR_ID, message, None)
        apply_changes(session, launched)
        commit(context, session, work)
        session.execute(
            update(Array)
            .where(Array.id == batch.array_id)
            .values(distributor_ids={str(step): did for step, did in ids.items()})
        )


def _submit(context: RunContext, batch: _Batch) -> tuple[dict[int, str], str | None]:
    """The backend's id of each step it took, and why it took none (None when it did)."""
    distributor = context.started_distributor()
    request = ResourceRequest.parse(batch.resources)  # once per array, not per instance
    specs = {step: _spec(context, row, request) for step, row in enumerate(batch.rows)}
    name = safe_name(f"jobfleet-{context.run_id}-{batch.array_id}")
    try:
        if len(batch.rows) == 1:
            return {0: _submit_one(context, distributor, specs[0], name, batch.resources)}, None
        return _submit_array(context, distributor, batch, specs, name), None
    except Exception as exc:  # the backend refused: the attempt ends W, a retry may follow
        log.warning(
            "run %s: submission of array %s failed: %s", context.run_id, batch.array_id, exc
        )
        return {}, f"the backend did not take the submission: {exc}"


def _submit_one(
    context: RunContext,
    distributor: ClusterDistributor,
    spec: TaskSpec,
    name: str,
    resources: dict[str, Any],
) -> str:
    context.started_channel().put_spec(spec)
    command = distributor.build_worker_node_command(task_instance_id=spec.task_instance_id)
    return distributor.submit_to_batch_distributor(command, name, dict(resources))


def _submit_array(
    context: RunContext,
    distributor: ClusterDistributor,
    batch: _Batch,
    specs: dict[int, TaskSpec],
    name: str,
) -> dict[int, str]:
    context.started_channel().put_array_specs(batch.array_id, 0, specs)
    command = distributor.build_worker_node_command(array_id=batch.array_id, batch_number=0)
    try:
        steps = distributor.submit_array_to_batch_distributor(
            command, name, dict(batch.resources), len(specs)
        )
    except NotImplementedError:
        # No arrays on this backend: the same instances, one submission each.
        return {
            step: _submit_one(context, distributor, spec, f"{name}-{step}", batch.resources)
            for step, spec in specs.items()
        }
    return {int(step): str(did) for step, did in steps.items()}


def _spec(context: RunContext, row: Any, request: ResourceRequest) -> TaskSpec:
    logs = str(Path(context.work_dir, "logs")) if context.work_dir else None
    return TaskSpec(
        task_instance_id=row.id,
        command=row.command,
        name=row.name,
        run_id=context.run_id,
        run_token=context.run_token,
        stdout_dir=logs,
        stderr_dir=logs,
        environment=dict(row.env),
        memory=request.memory,
        runtime=request.runtime,
        cores=request.cores,
        heartbeat_interval=context.options.heartbeat_interval,
    )
