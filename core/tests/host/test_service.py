"""The distributor service against real backends (dummy, multiprocess) and real ledgers."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jobfleet.core.exit_info import ErrorState, RemoteExitInfo
from jobfleet.core.host.ledger import (
    Array,
    Event,
    LeaseError,
    Ledger,
    Queue,
    Run,
    Task,
    TaskInstance,
    utcnow,
)
from jobfleet.core.host.queues import check_request
from jobfleet.core.host.runs import RunDefinitionError, ServiceOptions, create_run
from jobfleet.core.host.service import DistributorService, Progress
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.core.queue import BaseClusterQueue
from jobfleet.core.testing.host import is_locked, wait_for

FAST = ServiceOptions(
    poll_interval=0.01,
    max_poll_interval=0.05,
    heartbeat_interval=0.5,
    triage_interval=0.01,
)


def tasks(*commands: str, **fields: Any) -> list[TaskDefinition]:
    return [TaskDefinition(name=f"t{i}", command=c, **fields) for i, c in enumerate(commands)]


def start(ledger: Ledger, run_id: int, **kwargs: Any) -> DistributorService:
    service = DistributorService(ledger, run_id, **kwargs)
    service.start()
    return service


def run_to_end(ledger: Ledger, run_id: int, **kwargs: Any) -> Progress:
    service = start(ledger, run_id, **kwargs)
    try:
        return service.run_until_done()
    finally:
        service.close()


def instances(ledger: Ledger, run_id: int) -> list[TaskInstance]:
    with ledger.read_session() as session:
        query = select(TaskInstance).where(TaskInstance.run_id == run_id)
        return list(session.scalars(query.order_by(TaskInstance.id)).all())


def events(ledger: Ledger, run_id: int, kind: str | None = None) -> list[Event]:
    with ledger.read_session() as session:
        query = select(Event).where(Event.run_id == run_id)
        if kind:
            query = query.where(Event.kind == kind)
        return list(session.scalars(query.order_by(Event.id)).all())


class Calls:
    """Counts calls to a distributor's methods (the real methods still run)."""

    def __init__(self, distributor: Any, *names: str) -> None:
        self.counts: Counter[str] = Counter()
        for name in names:
            original = getattr(distributor, name)
            setattr(distributor, name, self._counted(name, original))

    def _counted(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return original(*args, **kwargs)

        return call


# --- the happy path, arrays, one status query per round --------------------------------------


def test_every_task_done_through_arrays_with_one_status_query_per_round(ledger: Ledger) -> None:
    options = ServiceOptions(array_size=1000, poll_interval=0.01, max_poll_interval=0.05)
    run_id = create_run(ledger, tasks(*["true"] * 2500), cluster="dummy", options=options)
    service = start(ledger, run_id)
    calls = Calls(
        service.distributor,
        "get_submitted_or_running",
        "submit_array_to_batch_distributor",
        "submit_to_batch_distributor",
    )
    rounds = 0
    try:
        while True:
            progress = service.round()
            rounds += 1
            if progress.status.value == "done":
                break
    finally:
        service.close()
    assert calls.counts["submit_array_to_batch_distributor"] == 3  # 1000 + 1000 + 500
    assert calls.counts["submit_to_batch_distributor"] == 0
    assert calls.counts["get_submitted_or_running"] <= rounds
    assert {i.state for i in instances(ledger, run_id)} == {"D"}
    with ledger.read_session() as session:
        sizes = sorted(session.scalars(select(Array.size).where(Array.run_id == run_id)))
        assert sizes == [500, 1000, 1000]
        assert session.scalar(select(Run.status).where(Run.id == run_id)) == "done"
        assert set(session.scalars(select(Task.state).where(Task.run_id == run_id))) == {"done"}


def test_backends_without_arrays_get_single_submissions(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("true", "true", "true"), cluster="dummy", options=FAST)
    service = start(ledger, run_id)
    assert service.distributor is not None

    def no_arrays(*_args: Any, **_kwargs: Any) -> dict[int, str]:
        raise NotImplementedError

    service.distributor.submit_array_to_batch_distributor = no_arrays  # type: ignore[method-assign]
    calls = Calls(service.distributor, "submit_to_batch_distributor")
    try:
        assert service.run_until_done().status.value == "done"
    finally:
        service.close()
    assert calls.counts["submit_to_batch_distributor"] == 3


def test_reports_of_real_commands_are_ingested(ledger: Ledger, tmp_path: Path) -> None:
    run_id = create_run(
        ledger, tasks("echo out; echo err >&2", "exit 0"), cluster="multiprocess", options=FAST
    )
    assert run_to_end(ledger, run_id).status.value == "done"
    for instance in instances(ledger, run_id):
        assert instance.state == "D"
        assert instance.maxrss
        assert instance.wallclock
        assert instance.cpu is not None
        assert instance.exit_record
        assert instance.exit_record["exit_code"] == 0
        assert instance.hostname
        assert instance.stdout_path
        assert instance.started_at
    first = instances(ledger, run_id)[0]
    assert first.stdout_path is not None
    assert first.stderr_path is not None
    assert Path(first.stdout_path).read_text() == "out\n"
    assert Path(first.stderr_path).read_text() == "err\n"


def test_ended_instances_leave_nothing_in_the_channel(ledger: Ledger) -> None:
    # Without this the channel kept an events file, and the cursor saved every round a
    # position, for every instance the run ever had.
    run_id = create_run(
        ledger, tasks(*["true"] * 6, "exit 3"), cluster="multiprocess", options=FAST
    )
    assert run_to_end(ledger, run_id).status.value == "failed"
    with ledger.read_session() as session:
        work_dir = session.scalar(select(Run.work_dir).where(Run.id == run_id))
    assert work_dir is not None
    assert os.listdir(Path(work_dir, "channel", "events")) == []
    assert {i.state for i in instances(ledger, run_id)} == {"D", "E"}


# --- retries -------------------------------------------------------------------------------


def test_an_application_error_is_retried_up_to_max_attempts(ledger: Ledger) -> None:
    run_id = create_run(
        ledger, tasks("exit 3", max_attempts=3), cluster="multiprocess", options=FAST
    )
    assert run_to_end(ledger, run_id).status.value == "failed"
    assert [(i.attempt, i.state) for i in instances(ledger, run_id)] == [
        (1, "E"),
        (2, "E"),
        (3, "E"),
    ]
    gave_up = events(ledger, run_id, "gave_up")
    assert len(gave_up) == 1
    assert "used all 3 attempts" in gave_up[0].message


def test_a_task_that_fails_once_then_succeeds(ledger: Ledger, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = 'test -e "$MARKER" || { touch "$MARKER"; exit 3; }'
    run_id = create_run(
        ledger,
        tasks(command, env={"MARKER": str(marker)}),
        cluster="multiprocess",
        options=FAST,
    )
    assert run_to_end(ledger, run_id).status.value == "done"
    assert [i.state for i in instances(ledger, run_id)] == ["E", "D"]


def test_a_resource_error_is_retried_with_scaled_memory(ledger: Ledger) -> None:
    hungry = "python3 -c 'b = bytearray(130 * 2**20); b[::4096] = b\"x\" * len(b[::4096])'"
    run_id = create_run(
        ledger,
        tasks(hungry, resources={"memory": "100M"}),
        cluster="multiprocess",
        options=FAST,
    )
    assert run_to_end(ledger, run_id).status.value == "done"
    done = instances(ledger, run_id)
    assert [(i.state, i.requested_resources["memory"]) for i in done] == [
        ("Z", "100M"),
        ("D", "150M"),
    ]
    assert done[0].exit_record
    assert done[0].exit_record["reason"] == "oom"
    adjustment = events(ledger, run_id, "adjustment")
    assert "memory 100M → 150M" in adjustment[-1].message
    assert adjustment[-1].details["changes"] == [
        {"field": "memory", "from": 100 * 2**20, "to": 150 * 2**20}
    ]


def test_fatal_errors_are_never_retried(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("true", max_attempts=5), cluster="dummy", options=FAST)
    service = start(ledger, run_id)
    fatal = RemoteExitInfo(ErrorState.ERROR_FATAL, "the node refused it for good")
    service.distributor.get_remote_exit_info = lambda _id: fatal  # type: ignore[union-attr,method-assign]
    try:
        assert service.run_until_done().status.value == "failed"
    finally:
        service.close()
    assert [i.state for i in instances(ledger, run_id)] == ["F"]


def test_resources_a_queue_refuses_fail_before_anything_is_written(ledger: Ledger) -> None:
    with pytest.raises(RunDefinitionError, match=r"'big'.*cores"):
        create_run(
            ledger,
            [TaskDefinition(name="big", command="true", resources={"cores": "nope"})],
            cluster="dummy",
        )
    with ledger.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_a_queue_the_ledger_does_not_have_is_refused_unless_asked_for(ledger: Ledger) -> None:
    misspelt = tasks("true", resources={"queue": "shrot"})
    with pytest.raises(RunDefinitionError, match=r"'t0' names the queue 'shrot'.*--new-queue"):
        create_run(ledger, misspelt, cluster="dummy")
    fallback = tasks("true", fallback_queues=("bigg",))
    with pytest.raises(RunDefinitionError, match=r"queue 'bigg'.*\(its queues: none yet\)"):
        create_run(ledger, fallback, cluster="dummy")
    with ledger.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
        assert session.scalars(select(Queue.name)).all() == []
    create_run(ledger, tasks("true"), cluster="dummy")  # the default queue needs no asking
    create_run(ledger, misspelt, cluster="dummy", new_queues=True)
    with ledger.read_session() as session:
        assert sorted(session.scalars(select(Queue.name))) == ["default", "shrot"]


def test_more_gpus_than_the_machine_gives_are_refused_at_creation(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused only at submission, then retried, before: the pool cannot hand out GPUs it has not.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(RunDefinitionError, match="gpus 750 is above the queue maximum of 0"):
        create_run(ledger, tasks("true", resources={"gpus": 750}), cluster="multiprocess")
    with ledger.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
    two = tasks("true", resources={"gpus": 2})
    # The pool's own size, where its settings (or CUDA_VISIBLE_DEVICES) give one, is the limit.
    create_run(ledger, two, cluster="multiprocess", cluster_settings={"gpus": "0,1"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(RunDefinitionError, match="gpus 2 is above the queue maximum of 1"):
        create_run(ledger, two, cluster="multiprocess")


def test_a_gpu_count_over_the_queue_maximum_is_never_reduced() -> None:
    queues = {"q": BaseClusterQueue(1, "q", {"max_gpus": 2, "max_cores": 2})}
    assert check_request(queues, {"queue": "q", "gpus": 2, "cores": 8}) is None  # cores clamp
    problem = check_request(queues, {"queue": "q", "gpus": "a100:3"})
    assert problem is not None
    assert "gpus 3 is above the queue maximum of 2, and GPUs are never reduced" in problem


# --- triage ----------------------------------------------------------------------------------


def test_an_instance_the_backend_cannot_account_for_is_given_up_as_unknown(
    ledger: Ledger,
) -> None:
    options = ServiceOptions(
        poll_interval=0.01, max_poll_interval=0.02, triage_interval=0.01, triage_timeout=0.2
    )
    run_id = create_run(ledger, tasks("true", max_attempts=1), cluster="dummy", options=options)
    service = start(ledger, run_id)
    assert service.distributor is not None
    asked = Counter[str]()

    def undecided(distributor_id: str) -> RemoteExitInfo:
        asked[distributor_id] += 1
        return RemoteExitInfo.unknown("accounting has not caught up", finalized=False)

    service.distributor.get_remote_exit_info = undecided  # type: ignore[method-assign]
    try:
        assert service.run_until_done().status.value == "failed"
    finally:
        service.close()
    (instance,) = instances(ledger, run_id)
    assert instance.state == "U"
    assert sum(asked.values()) >= 2  # asked again while not finalized
    assert instance.triage_count >= 1
    path = [e.to_state for e in events(ledger, run_id, "transition")]
    assert path == ["Q", "I", "O", "X", "U"]


def test_a_silent_running_instance_goes_to_triage(ledger: Ledger) -> None:
    options = ServiceOptions(
        poll_interval=0.01,
        max_poll_interval=0.02,
        heartbeat_interval=0.01,
        heartbeat_grace=0.05,
        triage_interval=0.01,
    )
    run_id = create_run(ledger, tasks("true"), cluster="dummy", options=options)
    service = start(ledger, run_id, environ={"JOBFLEET_DUMMY_REPORT_DELAY": "3600"})
    try:
        service.round()  # submitted
        (instance,) = instances(ledger, run_id)
        assert service.channel is not None
        with service.channel.open_writer(instance.id) as writer:
            from jobfleet.core.channel import EventKind

            # As a wrapper does: its reports carry the run token of the spec it read.
            writer.run_token = service.channel.get_spec(instance.id).run_token
            writer.send(EventKind.RUNNING, {"hostname": "node1"})
        wait_for(lambda: service.round() and instances(ledger, run_id)[0].state == "T", "triage")
        states = [e.to_state for e in events(ledger, run_id, "transition")]
        assert states[-2:] == ["R", "T"]
        assert "no heartbeat since" in events(ledger, run_id, "transition")[-1].message
    finally:
        service.close()


# --- kill ------------------------------------------------------------------------------------


def test_killing_a_run_ends_queued_and_running_tasks(ledger: Ledger, tmp_path: Path) -> None:
    lock = tmp_path / "held"
    hold = f"exec flock {lock} sleep 600"
    options = ServiceOptions(poll_interval=0.01, max_poll_interval=0.05)
    run_id = create_run(
        ledger,
        tasks(hold, *["sleep 600"] * 5, resources={"cores": 1}),
        cluster="multiprocess",
        cluster_settings={"cores": 1.0, "kill_grace": 1.0},
        options=options,
    )
    service = start(ledger, run_id)
    try:
        wait_for(lambda: service.round() and is_locked(lock), "the first task to run")
        with ledger.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(kill_requested_at=utcnow()))
        progress = service.run_until_done()
    finally:
        service.close()
    assert progress.status.value == "killed"
    assert {i.state for i in instances(ledger, run_id)} == {"K"}
    assert not is_locked(lock)


def test_killing_one_instance_leaves_the_others(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("sleep 600", "true"), cluster="multiprocess", options=FAST)
    service = start(ledger, run_id)
    try:
        service.round()
        target = instances(ledger, run_id)[0].id
        with ledger.session() as session:
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.id == target)
                .values(kill_requested_at=utcnow())
            )
        progress = service.run_until_done()
    finally:
        service.close()
    assert progress.status.value == "failed"  # one task killed, so the run did not succeed
    assert [i.state for i in instances(ledger, run_id)] == ["K", "D"]


# --- ownership and repeated reports -----------------------------------------------------------


def test_a_second_service_cannot_take_a_live_run(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("true"), cluster="dummy", options=FAST)
    first = start(ledger, run_id)
    try:
        with pytest.raises(LeaseError):
            start(ledger, run_id)
    finally:
        first.close()
    # A clean stop gives the run up: the next service takes it and finishes it.
    assert run_to_end(ledger, run_id).status.value == "done"


def test_a_crashed_owner_loses_the_run_when_its_lease_expires(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("true"), cluster="dummy", options=FAST)
    crashed = start(ledger, run_id, lease=timedelta(milliseconds=200))
    assert crashed.distributor is not None
    # The crashed service never renews; the next one waits for the lease to run out.
    successor = wait_for(lambda: _try_start(ledger, run_id), "the lease to expire", timeout=10)
    try:
        assert successor.run_until_done().status.value == "done"
    finally:
        successor.close()


def _try_start(ledger: Ledger, run_id: int) -> DistributorService | None:
    try:
        return start(ledger, run_id)
    except LeaseError:
        return None


def test_reading_every_report_again_changes_nothing(ledger: Ledger) -> None:
    run_id = create_run(
        ledger, tasks("exit 0", "exit 4", max_attempts=1), cluster="multiprocess", options=FAST
    )
    service = start(ledger, run_id)
    try:
        service.run_until_done()
        before = [(i.id, i.state, i.maxrss) for i in instances(ledger, run_id)]
        count = len(events(ledger, run_id))
        service._cursor = None  # as after a crash with the cursor never saved
        service.round()
    finally:
        service.close()
    assert [(i.id, i.state, i.maxrss) for i in instances(ledger, run_id)] == before
    assert len(events(ledger, run_id)) == count


# --- many workers, status polled meanwhile ---------------------------------------------------


def test_fifty_concurrent_workers_while_status_is_polled(ledger: Ledger, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    # Every task waits for the gate, so all fifty run (and report) at the same time.
    command = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    run_id = create_run(
        ledger,
        tasks(*[command] * 50, resources={"cores": 0.01}),
        cluster="multiprocess",
        cluster_settings={"cores": 1.0},
        options=FAST,
    )
    errors: list[BaseException] = []
    polls = Counter[str]()
    stop = threading.Event()

    def poll() -> None:
        reader = Ledger.open(str(ledger.url.database))
        try:
            while not stop.is_set():
                with reader.read_session() as session:
                    session.execute(
                        select(TaskInstance.state, func.count())
                        .where(TaskInstance.run_id == run_id)
                        .group_by(TaskInstance.state)
                    ).all()
                polls["status"] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader.close()

    poller = threading.Thread(target=poll)
    poller.start()
    service = start(ledger, run_id)
    try:
        wait_for(
            lambda: (
                service.round() and sum(i.state == "R" for i in instances(ledger, run_id)) == 50
            ),
            "fifty tasks running",
        )
        gate.touch()
        progress = service.run_until_done()
    finally:
        stop.set()
        poller.join()
        service.close()
    assert errors == []
    assert polls["status"] > 0
    assert progress.status.value == "done"
    finished = instances(ledger, run_id)
    assert len(finished) == 50  # no retries: no report was lost
    assert all(i.state == "D" and i.maxrss and i.exit_record for i in finished)


def test_a_run_on_each_kind_of_ledger(ledger_url: str) -> None:
    # SQLite and a real PostgreSQL (see conftest.py): retries, events and counts alike.
    with Ledger.open(ledger_url) as shared:
        run_id = create_run(
            shared,
            tasks(*["true"] * 30, max_attempts=2),
            cluster="dummy",
            cluster_settings={"fail_every": 10},
            options=FAST,
        )
        progress = run_to_end(shared, run_id)
        assert progress.task_counts == {"done": 30}
        # fail_every=10: instances 10, 20 and 30 of the backend failed and were retried.
        assert progress.state_counts == {"D": 30, "E": 3}
        assert len(events(shared, run_id, "transition")) == 33 * 5  # Q I O X, then D or E
        queued = [e for e in events(shared, run_id, "transition") if e.to_state == "Q"]
        assert {e.message for e in queued} == {"attempt 1 queued", "attempt 2 of 2, as before"}


def test_a_kill_from_outside_jobfleet_is_fatal_not_a_requested_kill(ledger: Ledger) -> None:
    run_id = create_run(
        ledger, tasks("sleep 600", max_attempts=3), cluster="multiprocess", options=FAST
    )
    service = start(ledger, run_id)
    try:
        wait_for(lambda: service.round() and instances(ledger, run_id)[0].state == "R", "running")
        assert service.channel is not None
        events_read, _ = service.channel.read_events(None)
        (running,) = [e for e in events_read if e.kind.value == "running"]
        os.kill(running.data["wrapper_pid"], signal.SIGTERM)  # as an admin would
        progress = service.run_until_done()
    finally:
        service.close()
    assert progress.status.value == "failed"
    (instance,) = instances(ledger, run_id)  # not retried
    assert instance.state == "F"
    assert "killed outside jobfleet" in events(ledger, run_id, "transition")[-1].message


def test_usage_from_the_backends_accounting_when_no_report_came(ledger: Ledger) -> None:
    run_id = create_run(ledger, tasks("true"), cluster="dummy", options=FAST)
    service = start(ledger, run_id)
    measured = RemoteExitInfo(
        ErrorState.DONE, "done", usage={"maxrss": 5 * 2**20, "cpu": 1.5, "wallclock": 3.0}
    )
    service.distributor.get_remote_exit_info = lambda _id: measured  # type: ignore[union-attr,method-assign]
    try:
        assert service.run_until_done().status.value == "done"
    finally:
        service.close()
    (instance,) = instances(ledger, run_id)
    assert (instance.maxrss, instance.cpu, instance.wallclock) == (5 * 2**20, 1.5, 3.0)
