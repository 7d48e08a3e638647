"""The distributor service: drives one run through a backend until every task is over.

Each round, in this order (each step its own short transaction, so a crash between two steps
leaves a ledger that the next service can pick up — see docs/host.md):

1. renew the run's lease (another service cannot take a run whose owner is alive);
2. carry out kill requests (`jobfleet kill` writes them to the ledger);
3. ask the backend once which of our launched instances it still has;
4. ingest the worker reports that arrived on the channel (running, heartbeats, final reports);
5. triage what the backend no longer has, or what went silent, through get_remote_exit_info;
6. submit queued instances, grouped into arrays of identical resources.

Attempts that end unsuccessfully are followed, in the same transaction, by their retry (see
retry.py) or by the task's end. Reports are applied by compare-and-set, so reading a report
twice (after a crash, from an older cursor) changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from jobfleet.core.channel import Channel, Event, EventCursor, EventKind, TaskSpec, open_channel
from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue
from jobfleet.core.errors import JobfleetError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.host import queries
from jobfleet.core.host.ledger import (
    ACTIVE_STATES,
    DEFAULT_LEASE,
    FINAL_RUN_STATUSES,
    Array,
    Change,
    Cluster,
    InstanceState,
    LeaseError,
    Ledger,
    Queue,
    Run,
    RunStatus,
    Task,
    TaskInstance,
    TaskState,
    acquire_lease,
    apply_changes,
    release_lease,
    renew_lease,
    take_over_lease,
    utcnow,
)
from jobfleet.core.host.ledger.models import Event as LedgerEvent
from jobfleet.core.host.queues import fit_request, queue_limits, queue_objects, request_queue
from jobfleet.core.host.retry import DEFAULT_SCALE, decide_retry
from jobfleet.core.host.runs import ServiceOptions
from jobfleet.core.naming import safe_name
from jobfleet.core.plugins import PluginRegistry, default_registry
from jobfleet.core.resources import ResourceRequest

log = logging.getLogger(__name__)

S = InstanceState
_LAUNCHED_STATES = (S.LAUNCHED, S.RUNNING, S.TRIAGING, S.NO_HEARTBEAT)
_ENDING_LETTERS = {
    state.value
    for state in (
        S.DONE,
        S.ERROR_RECOVERABLE,
        S.RESOURCE_ERROR,
        S.UNKNOWN_ERROR,
        S.ERROR_FATAL,
        S.KILL_SELF,
    )
}
# Bulk UPDATEs by id: the ORM need not look for the rows among the objects it has loaded
# (which costs time quadratic in the number of rows).
_NO_SYNC = {"synchronize_session": False}
# Attempts lost with a crashed host (never started) that are retried without counting.
_MAX_FREE_RETRIES = 10


class ServiceError(JobfleetError):
    """The service cannot drive the run (its lease was lost, the run is over, …)."""


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


@dataclass
class _Ended:
    """An attempt that ended in this round, with what is needed to decide what follows."""

    instance_id: int
    task_id: int
    attempt: int
    state: InstanceState
    resources: Mapping[str, Any]
    reason: str | None
    maxrss: int | None
    free: bool = False
    """Lost with a host that crashed before it ever started: it does not use up an attempt."""


@dataclass
class _Round:
    changes: list[Change] = field(default_factory=list)
    ended: list[_Ended] = field(default_factory=list)


class DistributorService:
    """Owns one run (through its lease) and drives it through its backend.

    Use `start()`, then `round()` until `Progress.status` is final (or `run_until_done()`),
    then `close()`. A service that crashed is replaced by a new one on the same run
    (`--resume`): `start()` reconciles the ledger with the backend and the channel.
    """

    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        *,
        registry: PluginRegistry | None = None,
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.registry = registry or default_registry()
        self.environ = dict(os.environ if environ is None else environ)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.options = ServiceOptions()
        self.distributor: ClusterDistributor | None = None
        self.channel: Channel | None = None
        self.queues: dict[str, ClusterQueue] = {}
        self._queue_rows: dict[str, int] = {}
        self._cursor: EventCursor | None = None
        self._lease_renewed = 0.0
        self._started_at = utcnow()
        self._asked: dict[int, float] = {}
        self._valid: dict[str, tuple[str | None, dict[str, Any], list[str]]] = {}
        self._stop = threading.Event()
        self._work_dir: str | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Take the run's lease, connect to the backend, and reconcile after a crash."""
        with self.ledger.session() as session:
            run = session.get(Run, self.run_id)
            if run is None:
                raise ServiceError(f"There is no run {self.run_id} in {self.ledger.safe_url}.")
            if RunStatus(run.status) in FINAL_RUN_STATUSES:
                raise ServiceError(f"Run {self.run_id} is already over ({run.status}).")
            self._take_lease(session)
            run.status = RunStatus.RUNNING.value
            cluster = session.get_one(Cluster, run.cluster_id)
            options = dict(run.options)
            host_url = run.host_url
            self._work_dir = run.work_dir
            self._cursor = EventCursor.from_dict(run.event_cursor) if run.event_cursor else None
            rows = {
                row.name: row
                for row in session.scalars(select(Queue).where(Queue.cluster_id == cluster.id))
            }
        self._lease_renewed = time.monotonic()
        if not host_url:
            raise ServiceError(f"Run {self.run_id} has no channel; it was not made by create_run.")
        self.options = ServiceOptions.from_dict(options.get("service", {}))
        plugin = self.registry.get_cluster(cluster.cluster_type)
        settings = plugin.settings(options.get("cluster_settings", {}), self.environ)
        self.queues = queue_objects(plugin, rows)
        self._queue_rows = {name: row.id for name, row in rows.items()}
        self.channel = open_channel(host_url, create=True)
        kwargs: dict[str, Any] = {"host_url": host_url}
        if settings is not None:
            kwargs["settings"] = settings
        self.distributor = plugin.distributor_class(cluster.name, **kwargs)
        self.distributor.start()
        self._recover_unsubmitted()

    def _take_lease(self, session: Session) -> None:
        """Acquire the run; an owner on this machine whose process is gone loses it at once.

        (Elsewhere a crashed owner loses it when its lease expires.)
        """
        try:
            acquire_lease(session, self.run_id, self.owner, duration=self.lease)
        except LeaseError as error:
            if error.owner is None or not _dead_local_owner(error.owner):
                raise
            take_over_lease(
                session, self.run_id, self.owner, previous=error.owner, duration=self.lease
            )
            log.warning(
                "run %s: took over from %s, whose process is gone", self.run_id, error.owner
            )

    def close(self) -> None:
        """Stop the backend connection and give the run up (a clean stop, not a kill)."""
        if self.distributor is not None:
            self.distributor.stop()
            self.distributor = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        with self.ledger.session() as session:
            release_lease(session, self.run_id, self.owner)

    def kill_requested(self) -> bool:
        """Carry out the kill requests in the ledger, and nothing else (no submission)."""
        return self._handle_kills()

    def request_stop(self) -> None:
        """Make `run_until_done` return after the current round (from another thread or a
        signal handler)."""
        self._stop.set()

    def clear_stop(self) -> None:
        """Let `run_until_done` run rounds again after `request_stop`."""
        self._stop.clear()

    def run_until_done(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Run rounds until the run is over (or `request_stop`); pauses grow while idle."""
        pause = self.options.poll_interval
        while True:
            progress = self.round()
            if on_progress is not None:
                on_progress(progress)
            if progress.status in FINAL_RUN_STATUSES or self._stop.is_set():
                return progress
            pause = (
                self.options.poll_interval
                if progress.changed
                else min(pause * 1.5, self.options.max_poll_interval)
            )
            self._stop.wait(pause)

    # -- one round ------------------------------------------------------------------------------

    def round(self) -> Progress:
        """One pass of the loop in the module docstring; returns where the run stands."""
        self._renew_lease()
        changed = self._handle_kills()
        still_there, missing = self._query_backend()
        changed |= self._ingest_events()
        changed |= self._triage(still_there, missing)
        changed |= self._submit_queued()
        return self._progress(changed)

    def _renew_lease(self) -> None:
        if time.monotonic() - self._lease_renewed < self.lease.total_seconds() / 3:
            return
        with self.ledger.session() as session:
            renew_lease(session, self.run_id, self.owner, duration=self.lease)
        self._lease_renewed = time.monotonic()

    # -- kills --------------------------------------------------------------------------------

    def _handle_kills(self) -> bool:
        with self.ledger.read_session() as session:
            run_killed = session.scalar(select(Run.kill_requested_at).where(Run.id == self.run_id))
            query = select(TaskInstance.id, TaskInstance.state, TaskInstance.distributor_id).where(
                TaskInstance.run_id == self.run_id,
                TaskInstance.state.in_([S.QUEUED.value, *[s.value for s in ACTIVE_STATES]]),
            )
            if run_killed is None:
                query = query.where(TaskInstance.kill_requested_at.is_not(None))
            doomed = session.execute(query).all()
        if not doomed:
            return False
        ids = [row.distributor_id for row in doomed if row.distributor_id]
        if ids:
            self._distributor().terminate_task_instances(ids)
        # Reports written while stopping (a task that finished first keeps its own outcome).
        self._ingest_events()
        with self.ledger.session() as session:
            rows = self._instances(session, [row.id for row in doomed])
            work = _Round()
            for row in rows:
                state = S(row.state)
                if state is S.QUEUED or state in ACTIVE_STATES:
                    self._end(work, row, S.KILL_SELF, "killed on request", None)
            self._commit(session, work)
        return True

    # -- the backend's view ---------------------------------------------------------------------

    def _query_backend(self) -> tuple[set[int], set[int]]:
        """One bulk status query: (instances the backend still has, instances it does not)."""
        with self.ledger.read_session() as session:
            rows = session.execute(
                select(TaskInstance.id, TaskInstance.distributor_id).where(
                    TaskInstance.run_id == self.run_id,
                    TaskInstance.state.in_([s.value for s in _LAUNCHED_STATES]),
                    TaskInstance.distributor_id.is_not(None),
                )
            ).all()
        if not rows:
            return set(), set()
        by_distributor_id = {row.distributor_id: row.id for row in rows}
        there = self._distributor().get_submitted_or_running(list(by_distributor_id))
        still = {iid for did, iid in by_distributor_id.items() if did in there}
        return still, set(by_distributor_id.values()) - still

    # -- worker reports -------------------------------------------------------------------------

    def _ingest_events(self) -> bool:
        events, cursor = self._channel().read_events(self._cursor)
        for problem in cursor.problems:
            log.warning("run %s: %s", self.run_id, problem)
        if not events:
            self._cursor = cursor
            return False
        by_instance: dict[int, list[Event]] = defaultdict(list)
        for event in events:
            by_instance[event.task_instance_id].append(event)
        with self.ledger.session() as session:
            rows = {row.id: row for row in self._instances(session, list(by_instance))}
            catch_up, work = _Round(), _Round()
            notes: list[dict[str, Any]] = []
            for instance_id, instance_events in by_instance.items():
                row = rows.get(instance_id)
                if row is None or row.run_id != self.run_id:
                    continue  # not ours (a channel shared by mistake): never touch it
                self._apply_reports(row, instance_events, catch_up, work, notes)
            apply_changes(session, catch_up.changes)
            self._commit(session, work)
            for values in notes:
                instance_id = values.pop("id")
                session.execute(
                    update(TaskInstance).where(TaskInstance.id == instance_id).values(**values),
                    execution_options=_NO_SYNC,
                )
            session.execute(
                update(Run).where(Run.id == self.run_id).values(event_cursor=cursor.to_dict())
            )
        self._cursor = cursor
        return True

    def _apply_reports(
        self,
        row: Any,
        events: Sequence[Event],
        catch_up: _Round,
        work: _Round,
        notes: list[dict[str, Any]],
    ) -> None:
        state = S(row.state)
        final = next((e for e in events if e.kind is EventKind.FINAL), None)
        running = next((e for e in events if e.kind is EventKind.RUNNING), None)
        beats = [e for e in events if e.kind is EventKind.HEARTBEAT]
        first = final or running or (beats[0] if beats else None)
        if first is None:
            return
        if state is S.INSTANTIATED:
            # Submitted by a service that crashed before writing the backend's id: the report
            # proves the launch and carries the id.
            did = first.data.get("distributor_id")
            catch_up.changes.append(
                Change(
                    row.id,
                    self.run_id,
                    S.INSTANTIATED,
                    S.LAUNCHED,
                    "launched (seen in its worker's report)",
                    values={"distributor_id": str(did) if did else None},
                )
            )
            state = S.LAUNCHED
        if final is not None:
            if running is not None and state is S.LAUNCHED:
                final = _with_start(final, running)
            self._apply_final(row, state, final, work, notes)
        elif running is not None and state in (S.LAUNCHED, S.NO_HEARTBEAT, S.TRIAGING):
            work.changes.append(
                Change(
                    row.id,
                    self.run_id,
                    state,
                    S.RUNNING,
                    "running",
                    values=_running_values(running),
                    details={},
                )
            )
        elif beats and state in (S.NO_HEARTBEAT, S.TRIAGING):
            work.changes.append(
                Change(
                    row.id,
                    self.run_id,
                    state,
                    S.RUNNING,
                    "heard from again",
                    values={"heartbeat_at": utcnow()},
                )
            )
        elif beats and state is S.RUNNING:
            notes.append({"id": row.id, "heartbeat_at": utcnow()})

    def _apply_final(
        self,
        row: Any,
        state: InstanceState,
        final: Event,
        work: _Round,
        notes: list[dict[str, Any]],
    ) -> None:
        data = final.data
        values = _final_values(data)
        if state.is_final or state is S.QUEUED:
            if row.maxrss is None and values.get("maxrss") is not None:
                notes.append({"id": row.id, **values})  # a late report still brings its usage
            return
        letter = str(data.get("error_state", ""))
        target = S(letter) if letter in _ENDING_LETTERS else S.UNKNOWN_ERROR
        message = str(data.get("message") or "")
        if target is S.KILL_SELF and not self._kill_was_requested(row):
            # Stopped by someone else (an admin's scancel, a kill of the wrapper): K would say
            # the host asked for it. Deliberate, so not retried either.
            target, message = S.ERROR_FATAL, f"killed outside jobfleet: {message}"
        self._end(work, row, target, message, values, state=state)

    def _kill_was_requested(self, row: Any) -> bool:
        if row.kill_requested_at is not None:
            return True
        with self.ledger.read_session() as session:
            requested = session.scalar(select(Run.kill_requested_at).where(Run.id == self.run_id))
        return requested is not None

    # -- triage ---------------------------------------------------------------------------------

    def _triage(self, still_there: set[int], missing: set[int]) -> bool:
        now = utcnow()
        deadline = now - timedelta(seconds=self.options.heartbeat_deadline)
        with self.ledger.read_session() as session:
            rows = (
                session.execute(
                    select(TaskInstance).where(
                        TaskInstance.run_id == self.run_id,
                        TaskInstance.state.in_([s.value for s in _LAUNCHED_STATES]),
                    )
                )
                .scalars()
                .all()
            )
        silent = [
            row
            for row in rows
            if row.id in missing
            or S(row.state) in (S.TRIAGING, S.NO_HEARTBEAT)
            or (
                row.state == S.RUNNING.value
                and (row.heartbeat_at or row.started_at or now) < deadline
            )
        ]
        if not silent:
            return False
        work, asked = _Round(), _Round()
        moved_now: set[int] = set()
        for row in silent:
            state = S(row.state)
            if state is S.LAUNCHED:
                asked.changes.append(
                    Change(
                        row.id,
                        self.run_id,
                        state,
                        S.NO_HEARTBEAT,
                        "the backend no longer has it, and it never reported",
                    )
                )
                row.state = S.NO_HEARTBEAT.value
                moved_now.add(row.id)
            elif state is S.RUNNING:
                why = (
                    "the backend no longer has it"
                    if row.id in missing
                    else "no heartbeat since " + _when(row.heartbeat_at or row.started_at)
                )
                asked.changes.append(Change(row.id, self.run_id, state, S.TRIAGING, why))
                row.state = S.TRIAGING.value
                moved_now.add(row.id)
        given_up: list[str] = []
        counts: list[int] = []
        clock = time.monotonic()
        for row in silent:
            if clock - self._asked.get(row.id, 0.0) < self.options.triage_interval:
                continue
            self._asked[row.id] = clock
            info = self._remote_exit_info(row.distributor_id)
            if info.finalized:
                values = {
                    "exit_record": info.record.to_dict()
                    if info.record
                    else {"reason": None, "message": info.error_message}
                }
                # The worker's report never came: the backend's accounting is all there is.
                values.update(_final_values({"usage": dict(info.usage or {})}))
                self._end(
                    work,
                    row,
                    S(info.error_state.value),
                    info.error_message,
                    values,
                    state=S(row.state),
                )
                continue
            counts.append(row.id)
            silent_since = now if row.id in moved_now else row.state_at
            if (now - silent_since).total_seconds() > self.options.triage_timeout:
                if row.distributor_id and row.id in still_there:
                    given_up.append(row.distributor_id)
                self._end(
                    work,
                    row,
                    S.UNKNOWN_ERROR,
                    f"the backend gave no final answer in {self.options.triage_timeout:g} s:"
                    f" {info.error_message}",
                    None,
                    state=S(row.state),
                )
        if given_up:
            # Never retry while the backend may still be running the old attempt.
            self._distributor().terminate_task_instances(given_up)
        with self.ledger.session() as session:
            apply_changes(session, asked.changes)
            self._commit(session, work)
            if counts:
                session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.id.in_(counts))
                    .values(triage_count=TaskInstance.triage_count + 1),
                    execution_options=_NO_SYNC,
                )
        return bool(asked.changes or work.changes)

    def _remote_exit_info(self, distributor_id: str | None) -> RemoteExitInfo:
        if not distributor_id:
            return RemoteExitInfo.unknown("it has no distributor id")
        try:
            return self._distributor().get_remote_exit_info(distributor_id)
        except Exception as exc:  # the protocol says it never raises; a plugin may still
            log.exception("get_remote_exit_info(%r) raised", distributor_id)
            return RemoteExitInfo.unknown(f"asking the backend failed: {exc}", finalized=False)

    # -- ending attempts and what follows -------------------------------------------------------

    def _end(
        self,
        work: _Round,
        row: Any,
        target: InstanceState,
        message: str,
        values: Mapping[str, Any] | None,
        *,
        state: InstanceState | None = None,
        free: bool | None = None,
    ) -> None:
        current = state or S(row.state)
        if free is None:
            free = target is S.UNKNOWN_ERROR and self._lost_with_old_host(row)
        work.changes.append(
            Change(row.id, self.run_id, current, target, message, values=dict(values or {}))
        )
        record = (values or {}).get("exit_record") or {}
        work.ended.append(
            _Ended(
                row.id,
                row.task_id,
                row.attempt,
                target,
                dict(row.requested_resources),
                record.get("reason"),
                (values or {}).get("maxrss"),
                free,
            )
        )

    def _lost_with_old_host(self, row: Any) -> bool:
        submitted = getattr(row, "submitted_at", None)
        started = getattr(row, "started_at", None)
        return started is None and submitted is not None and submitted < self._started_at

    def _commit(self, session: Session, work: _Round) -> None:
        """Write the round's transitions, then what follows each ended attempt."""
        apply_changes(session, work.changes)
        if not work.ended:
            return
        tasks = {
            task.id: task
            for task in session.scalars(
                select(Task).where(Task.id.in_({e.task_id for e in work.ended}))
            )
        }
        limits = queue_limits(self.queues)
        retries, over = [], defaultdict(list)
        for ended in work.ended:
            task = tasks[ended.task_id]
            if ended.state is S.DONE:
                over[TaskState.DONE].append(task.id)
                continue
            if ended.state is S.KILL_SELF:
                over[TaskState.KILLED].append(task.id)
                continue
            free_retries = int(task.options.get("free_retries", 0))
            if ended.free and free_retries < _MAX_FREE_RETRIES:
                # Not the task's fault: the next attempt does not count against max_attempts.
                free_retries += 1
                task.options = {**task.options, "free_retries": free_retries}
            decision = decide_retry(
                ended.state,
                attempt=ended.attempt - free_retries,
                max_attempts=task.max_attempts,
                resources=ended.resources,
                reason=ended.reason,
                queue_limits=limits,
                scale=float(task.options.get("resource_scale", DEFAULT_SCALE)),
                fallback_queues=task.options.get("fallback_queues", ()),
                maxrss=ended.maxrss,
            )
            if decision.retry:
                retries.append((ended, task, decision))
            else:
                over[TaskState.FAILED].append(task.id)
                self._note(session, ended.instance_id, "gave_up", f"task over: {decision.message}")
        for task_state, ids in over.items():
            session.execute(
                update(Task).where(Task.id.in_(ids)).values(state=task_state.value),
                execution_options=_NO_SYNC,
            )
        self._add_retries(session, retries)

    def _add_retries(self, session: Session, retries: list[tuple[_Ended, Task, Any]]) -> None:
        if not retries:
            return
        now = utcnow()
        new_ids = session.scalars(
            insert(TaskInstance).returning(TaskInstance.id, sort_by_parameter_order=True),
            [
                {
                    "task_id": task.id,
                    "run_id": self.run_id,
                    "attempt": ended.attempt + 1,
                    "state": S.QUEUED.value,
                    # A plain retry asks for what the task asked for (coercion runs again).
                    "requested_resources": decision.resources or dict(task.resources),
                    "created_at": now,
                    "state_at": now,
                }
                for ended, task, decision in retries
            ],
        ).all()
        events = []
        for new_id, (ended, _task, decision) in zip(new_ids, retries, strict=True):
            events.append(
                _event_row(
                    self.run_id,
                    new_id,
                    "transition",
                    decision.message,
                    now,
                    {"retry_of": ended.instance_id},
                    to_state=S.QUEUED.value,
                )
            )
            if decision.changes:
                events.append(
                    _event_row(
                        self.run_id,
                        new_id,
                        "adjustment",
                        f"scaled after a resource error: {decision.message}",
                        now,
                        {
                            "changes": decision.changes,
                            "from": dict(ended.resources),
                            "to": decision.resources,
                        },
                    )
                )
        session.execute(insert(LedgerEvent), events)

    def _note(
        self,
        session: Session,
        instance_id: int,
        kind: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        session.execute(
            insert(LedgerEvent),
            [_event_row(self.run_id, instance_id, kind, message, utcnow(), dict(details or {}))],
        )

    # -- submission -----------------------------------------------------------------------------

    def _submit_queued(self) -> bool:
        with self.ledger.read_session() as session:
            rows = session.execute(
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
                .where(TaskInstance.run_id == self.run_id, TaskInstance.state == S.QUEUED.value)
                .order_by(TaskInstance.id)
                .limit(self.options.submit_batch)
            ).all()
        if not rows:
            return False
        groups: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            groups[json.dumps(row.requested_resources, sort_keys=True, default=str)].append(row)
        batches = self._instantiate(groups)
        for batch in batches:
            self._launch(batch)
        return True

    def _fit(self, resources: Mapping[str, Any]) -> tuple[str | None, dict[str, Any], list[str]]:
        """(why it cannot run or None, coerced resources, adjustments) — cached per request,
        because validation and coercion are most of the cost of a submission."""
        key = json.dumps(resources, sort_keys=True, default=str)
        if key not in self._valid:
            fit = fit_request(self.queues, resources)
            self._valid[key] = (fit.problem, fit.coerced, fit.adjustments)
        return self._valid[key]

    def _instantiate(self, groups: Mapping[str, list[Any]]) -> list[_Batch]:
        """Q → I for every group (F where the queue refuses), arrays written; one transaction."""
        batches: list[_Batch] = []
        refused = _Round()
        now = utcnow()
        with self.ledger.session() as session:
            instantiate, adjustments = [], []
            for group in groups.values():
                problem, coerced, notes = self._fit(group[0].requested_resources)
                if problem is not None:
                    for row in group:
                        instantiate.append(
                            Change(
                                row.id,
                                self.run_id,
                                S.QUEUED,
                                S.INSTANTIATED,
                                "checked against the queue",
                            )
                        )
                        refused.changes.append(
                            Change(
                                row.id,
                                self.run_id,
                                S.INSTANTIATED,
                                S.ERROR_FATAL,
                                f"refused: {problem}",
                            )
                        )
                    continue
                queue_id = self._queue_rows.get(request_queue(coerced))
                for start in range(0, len(group), self.options.array_size):
                    chunk = group[start : start + self.options.array_size]
                    array = Array(
                        run_id=self.run_id, queue_id=queue_id, resources=coerced, size=len(chunk)
                    )
                    session.add(array)
                    session.flush()
                    batches.append(_Batch(array.id, coerced, chunk))
                    for step, row in enumerate(chunk):
                        instantiate.append(
                            Change(
                                row.id,
                                self.run_id,
                                S.QUEUED,
                                S.INSTANTIATED,
                                f"array {array.id} step {step}",
                                values={
                                    "array_id": array.id,
                                    "array_step": step,
                                    "requested_resources": coerced,
                                },
                            )
                        )
                        if notes:
                            adjustments.append(
                                _event_row(
                                    self.run_id,
                                    row.id,
                                    "adjustment",
                                    " ".join(notes),
                                    now,
                                    {"from": row.requested_resources, "to": coerced},
                                )
                            )
            apply_changes(session, instantiate)
            if adjustments:
                session.execute(insert(LedgerEvent), adjustments)
            work = _Round()
            for change in refused.changes:
                row = next(r for g in groups.values() for r in g if r.id == change.instance_id)
                self._end(work, _RowView(row, S.INSTANTIATED), S.ERROR_FATAL, change.message, None)
            self._commit(session, work)
        return batches

    def _launch(self, batch: _Batch) -> None:
        """Specs to the channel, one submission to the backend, I → O (or W)."""
        distributor = self._distributor()
        request = ResourceRequest.parse(batch.resources)  # once per array, not per instance
        specs = {step: self._spec(row, request) for step, row in enumerate(batch.rows)}
        name = safe_name(f"jobfleet-{self.run_id}-{batch.array_id}")
        ids: dict[int, str] = {}
        failure: str | None = None
        try:
            if len(batch.rows) == 1:
                ids = {0: self._submit_one(distributor, specs[0], name, batch.resources)}
            else:
                ids = self._submit_array(distributor, batch, specs, name)
        except Exception as exc:  # the backend refused: the attempt ends W, a retry may follow
            log.warning(
                "run %s: submission of array %s failed: %s", self.run_id, batch.array_id, exc
            )
            failure = f"the backend did not take the submission: {exc}"
        with self.ledger.session() as session:
            work = _Round()
            launched = []
            for step, row in enumerate(batch.rows):
                if step in ids:
                    launched.append(
                        Change(
                            row.id,
                            self.run_id,
                            S.INSTANTIATED,
                            S.LAUNCHED,
                            "submitted",
                            values={"distributor_id": ids[step]},
                        )
                    )
                else:
                    self._end(
                        work,
                        _RowView(row, S.INSTANTIATED, batch.resources),
                        S.NO_DISTRIBUTOR_ID,
                        failure or "the backend gave no id",
                        None,
                    )
            apply_changes(session, launched)
            self._commit(session, work)
            session.execute(
                update(Array)
                .where(Array.id == batch.array_id)
                .values(distributor_ids={str(step): did for step, did in ids.items()})
            )

    def _submit_one(
        self, distributor: ClusterDistributor, spec: TaskSpec, name: str, resources: dict[str, Any]
    ) -> str:
        self._channel().put_spec(spec)
        command = distributor.build_worker_node_command(task_instance_id=spec.task_instance_id)
        return distributor.submit_to_batch_distributor(command, name, dict(resources))

    def _submit_array(
        self, distributor: ClusterDistributor, batch: _Batch, specs: dict[int, TaskSpec], name: str
    ) -> dict[int, str]:
        self._channel().put_array_specs(batch.array_id, 0, specs)
        command = distributor.build_worker_node_command(array_id=batch.array_id, batch_number=0)
        try:
            steps = distributor.submit_array_to_batch_distributor(
                command, name, dict(batch.resources), len(specs)
            )
        except NotImplementedError:
            # No arrays on this backend: the same instances, one submission each.
            return {
                step: self._submit_one(distributor, spec, f"{name}-{step}", batch.resources)
                for step, spec in specs.items()
            }
        return {int(step): str(did) for step, did in steps.items()}

    def _spec(self, row: Any, request: ResourceRequest) -> TaskSpec:
        logs = str(Path(self._work_dir, "logs")) if self._work_dir else None
        return TaskSpec(
            task_instance_id=row.id,
            command=row.command,
            name=row.name,
            run_id=self.run_id,
            stdout_dir=logs,
            stderr_dir=logs,
            environment=dict(row.env),
            memory=request.memory,
            runtime=request.runtime,
            cores=request.cores,
            heartbeat_interval=self.options.heartbeat_interval,
        )

    # -- crash recovery ---------------------------------------------------------------------------

    def _recover_unsubmitted(self) -> None:
        """Instances a crashed service left in I: submitted or not, nobody knows their id.

        Reports on the channel prove a launch (and carry the id). For the rest, the specs are
        removed first — a wrapper that starts late then finds nothing to run — and the channel
        is read once more; whatever is still unaccounted for ends W and is retried.
        """
        self._ingest_events()
        with self.ledger.read_session() as session:
            stranded = session.scalars(
                select(TaskInstance.id).where(
                    TaskInstance.run_id == self.run_id, TaskInstance.state == S.INSTANTIATED.value
                )
            ).all()
        if not stranded:
            return
        for instance_id in stranded:
            with contextlib.suppress(JobfleetError):
                self._channel().remove(instance_id)
        self._ingest_events()
        with self.ledger.session() as session:
            work = _Round()
            for row in self._instances(session, stranded):
                if row.state == S.INSTANTIATED.value:
                    self._end(
                        work,
                        row,
                        S.NO_DISTRIBUTOR_ID,
                        "the host stopped while submitting it; its spec was withdrawn",
                        None,
                        free=True,
                    )
            self._commit(session, work)

    # -- progress -------------------------------------------------------------------------------

    def _progress(self, changed: bool) -> Progress:
        with self.ledger.read_session() as session:
            task_counts = queries.task_counts(session, self.run_id)
            state_counts = queries.state_counts(session, self.run_id)
        status = RunStatus.RUNNING
        if not task_counts.get(TaskState.PENDING.value):
            status = self._finish(task_counts)
        return Progress(self.run_id, status, task_counts, state_counts, changed)

    def _finish(self, task_counts: Mapping[str, int]) -> RunStatus:
        with self.ledger.session() as session:
            run = session.get_one(Run, self.run_id)
            if run.kill_requested_at is not None:
                status = RunStatus.KILLED
            elif task_counts.get(TaskState.FAILED.value) or task_counts.get(TaskState.KILLED.value):
                status = RunStatus.FAILED
            else:
                status = RunStatus.DONE
            run.status = status.value
            run.finished_at = utcnow()
        return status

    # -- helpers --------------------------------------------------------------------------------

    def _instances(self, session: Session, ids: Iterable[int]) -> list[TaskInstance]:
        found: list[TaskInstance] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            found.extend(
                session.scalars(
                    select(TaskInstance).where(TaskInstance.id.in_(ids[start : start + 500]))
                ).all()
            )
        return found

    def _distributor(self) -> ClusterDistributor:
        if self.distributor is None:
            raise ServiceError("The service is not started.")
        return self.distributor

    def _channel(self) -> Channel:
        if self.channel is None:
            raise ServiceError("The service is not started.")
        return self.channel


@dataclass
class _Batch:
    array_id: int
    resources: dict[str, Any]
    rows: list[Any]


class _RowView:
    """The fields `_end` reads, for a row fetched by a column query rather than as an object."""

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


def _running_values(event: Event) -> dict[str, Any]:
    data = event.data
    return {
        key: data.get(key)
        for key in ("hostname", "stdout_path", "stderr_path")
        if isinstance(data.get(key), str)
    } | {"heartbeat_at": utcnow(), "started_at": datetime.fromtimestamp(event.time, UTC)}


def _with_start(final: Event, running: Event) -> Event:
    """The final report, carrying when the task started (both arrived in one round)."""
    data = {**running.data, **final.data, "started_time": running.time}
    return dataclasses.replace(final, data=data)


def _final_values(data: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    started = data.get("started_time")
    if isinstance(started, int | float):
        values["started_at"] = datetime.fromtimestamp(started, UTC)
    if isinstance(data.get("exit"), dict):
        values["exit_record"] = data["exit"]
    usage = data.get("usage")
    if isinstance(usage, dict):
        for key in ("maxrss", "cpu", "wallclock", "usage_str"):
            if usage.get(key) is not None:
                values[key] = usage[key]
        if "maxrss" in values:
            values["maxrss"] = int(values["maxrss"])
    for key in ("hostname", "stdout_path", "stderr_path"):
        if isinstance(data.get(key), str):
            values[key] = data[key]
    return values


def _event_row(
    run_id: int,
    instance_id: int | None,
    kind: str,
    message: str,
    at: datetime,
    details: Mapping[str, Any],
    *,
    to_state: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "task_instance_id": instance_id,
        "kind": kind,
        "from_state": None,
        "to_state": to_state,
        "at": at,
        "message": message,
        "details": dict(details),
    }


def _dead_local_owner(owner: str) -> bool:
    """Whether `owner` (a token "host:pid:nonce") is a service of this machine that is gone."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


__all__ = ["DistributorService", "Progress", "ServiceError"]
