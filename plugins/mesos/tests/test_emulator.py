"""The loopback Mesos master and agents (mesos_emulator/), driven through pymesos itself."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mesos_emulator import MesosCluster
from pymesos import MesosSchedulerDriver, Scheduler, encode_data

EXECUTOR_SCRIPT = Path(__file__).with_name("mesos_test_executor.py")


# ---------------------------------------------------------------------------------------------
# helpers


class Recorder(Scheduler):  # type: ignore[misc]
    """Records every callback; offers are kept for the test to use unless `on_offers` is set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.framework_id: str | None = None
        self.registrations = 0
        self.reregistrations = 0
        self.disconnections = 0
        self.offers: list[Any] = []
        self.updates: list[Any] = []
        self.rescinded: list[str] = []
        self.agents_lost: list[str] = []
        self.executors_lost: list[tuple[str, str, int]] = []
        self.messages: list[bytes] = []
        self.errors: list[str] = []
        self.heartbeats = 0
        self.on_offers: Callable[[Any, list[Any]], None] | None = None

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        with self.lock:
            self.framework_id = framework_id.value
            self.registrations += 1

    def reregistered(self, driver: Any, master_info: Any) -> None:
        with self.lock:
            self.reregistrations += 1

    def disconnected(self, driver: Any) -> None:
        with self.lock:
            self.disconnections += 1

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        with self.lock:
            self.offers.extend(offers)
        if self.on_offers is not None:
            self.on_offers(driver, offers)

    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        with self.lock:
            self.rescinded.append(offer_id.value)

    def statusUpdate(self, driver: Any, update: Any) -> None:
        with self.lock:
            self.updates.append(update)

    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        with self.lock:
            self.messages.append(base64.b64decode(data))

    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        with self.lock:
            self.agents_lost.append(agent_id.value)

    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: int) -> None:
        with self.lock:
            self.executors_lost.append((executor_id.value, agent_id.value, status))

    def error(self, driver: Any, message: str) -> None:
        with self.lock:
            self.errors.append(message)
        driver.stop(failover=True)  # or pymesos resubscribes at once, and again

    def processHeartBeat(self, driver: Any) -> None:
        with self.lock:
            self.heartbeats += 1

    # -- queries -------------------------------------------------------------------------------
    def states(self, task_id: str) -> list[str]:
        with self.lock:
            return [u.state for u in self.updates if u.task_id.value == task_id]

    def last(self, task_id: str) -> Any:
        with self.lock:
            found = [u for u in self.updates if u.task_id.value == task_id]
        return found[-1] if found else None

    def take_offer(self, agent_id: str | None = None) -> Any:
        with self.lock:
            for i, offer in enumerate(self.offers):
                if agent_id is None or offer.agent_id.value == agent_id:
                    return self.offers.pop(i)
        return None


class Framework:
    def __init__(self, mc: MesosCluster, sched: Recorder, driver: Any) -> None:
        self.mc, self.sched, self.driver = mc, sched, driver

    @property
    def id(self) -> str:
        assert self.sched.framework_id is not None
        return self.sched.framework_id

    def offer(self, agent_id: str | None = None, timeout: float = 10) -> Any:
        return self.mc.wait_for(lambda: self.sched.take_offer(agent_id), timeout)

    def wait_state(self, task_id: str, state: str, timeout: float = 60) -> Any:
        self.mc.wait_for(lambda: state in self.sched.states(task_id), timeout)
        return self.sched.last(task_id)


@pytest.fixture
def start(mesos_cluster: MesosCluster) -> Iterator[Callable[..., Framework]]:
    drivers: list[Any] = []

    def _start(
        *,
        failover_timeout: float = 60,
        principal: str | None = None,
        secret: str | None = None,
        implicit_acks: bool = True,
        **info: Any,
    ) -> Framework:
        sched = Recorder()
        framework = {
            "user": "tester",
            "name": "emulator-test",
            "failover_timeout": failover_timeout,
            **info,
        }
        driver = MesosSchedulerDriver(
            sched,
            framework,
            mesos_cluster.master,
            use_addict=True,
            implicit_acknowledgements=implicit_acks,
            principal=principal,
            secret=secret,
        )
        drivers.append(driver)
        driver.start()
        mesos_cluster.wait_for(lambda: sched.framework_id, 10)
        return Framework(mesos_cluster, sched, driver)

    yield _start
    for driver in drivers:
        driver.stop(failover=True)
    for driver in drivers:
        driver.join()


def executor_info(executor_id: str = "test-executor", **extra: Any) -> dict[str, Any]:
    return {
        "executor_id": {"value": executor_id},
        "name": "test executor",
        "command": {"value": f"exec {sys.executable} {EXECUTOR_SCRIPT}"},
        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
        **extra,
    }


def scalar(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def task_info(
    task_id: str,
    offer: Any,
    command: str = "echo hi",
    *,
    cpus: float = 0.5,
    mem: float = 128,
    executor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "task_id": {"value": task_id},
        "agent_id": {"value": offer.agent_id.value},
        "name": f"task {task_id}",
        "executor": executor or executor_info(),
        "data": encode_data(command.encode()),
        "resources": [scalar("cpus", cpus), scalar("mem", mem)],
    }


def post(mc: MesosCluster, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback http
        mc.master_url + "/api/v1/scheduler",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback http
            return resp.status, resp.read(1000)
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------------------------
# the basic path


def test_launch_through_a_pymesos_executor(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    names = {r.name: r.scalar.value for r in offer.resources}
    assert names == {"cpus": 2.0, "mem": 4096.0, "disk": 10000.0}
    assert offer.hostname in ("agent-1", "agent-2")
    fw.driver.launchTasks(offer.id, [task_info("t1", offer)])
    done = fw.wait_state("t1", "TASK_FINISHED")
    assert fw.sched.states("t1") == ["TASK_RUNNING", "TASK_FINISHED"]
    assert base64.b64decode(done.data) == b"0"
    assert done.uuid
    assert done.agent_id.value == offer.agent_id.value
    assert done.executor_id.value == "test-executor"
    mc.wait_for(lambda: mc.tasks(fw.id)[0]["completed"])
    assert mc.call_count("ACKNOWLEDGE") == 2
    [task] = mc.tasks(fw.id)
    assert task["state"] == "TASK_FINISHED"
    assert task["resources"]["cpus"] == 0.5
    sandbox = next(Path(mc.root).rglob("runs/*/stdout")).parent
    assert (sandbox / "stdout").read_text() == "hi\n"
    assert fw.id in mc.frameworks()
    assert mc.frameworks()[fw.id]["connected"]


def running_executors(mc: MesosCluster) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if "MESOS_EMULATOR_CONTAINER_ID" in env and env.get("MESOS_DIRECTORY", "").startswith(
            str(mc.root)
        ):
            out.append(p)
    return out


def test_command_task_and_messages(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    task = {
        "task_id": {"value": "cmd"},
        "agent_id": {"value": offer.agent_id.value},
        "name": "command task",
        "command": {
            "value": 'test -n "$MESOS_SANDBOX" && echo $GREETING',
            "environment": {"variables": [{"name": "GREETING", "value": "hello"}]},
        },
        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
    }
    long = task_info("long", offer, "sleep 30")
    fw.driver.launchTasks(offer.id, [task, long])
    fw.wait_state("cmd", "TASK_FINISHED")
    assert fw.sched.states("cmd") == ["TASK_RUNNING", "TASK_FINISHED"]
    fw.wait_state("long", "TASK_RUNNING")
    fw.driver.sendFrameworkMessage(
        {"value": "test-executor"}, {"value": offer.agent_id.value}, encode_data(b"ping")
    )
    mc.wait_for(lambda: fw.sched.messages == [b"echo:ping"])
    assert mc.call_count("MESSAGE") == 1
    stdout = next(p for p in Path(mc.root).rglob("executors/cmd/runs/*/stdout"))
    assert stdout.read_text() == "hello\n"


def test_decline_filters_and_suppress_revive(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start()
    first, second = fw.offer(), fw.offer()
    assert {first.agent_id.value, second.agent_id.value} == set(mc.agents())
    sent = mc.offers_sent
    fw.driver.declineOffer(first.id, filters={"refuse_seconds": 1.5})
    fw.driver.declineOffer(second.id, filters={"refuse_seconds": 60})
    assert mc.call_count("DECLINE") == 2
    assert mc.offers_declined == 2
    again = fw.offer(timeout=5)  # after 1.5 s, only the first agent's
    assert again.agent_id.value == first.agent_id.value
    assert mc.offers_sent == sent + 1
    fw.driver.suppressOffers()
    mc.wait_for(lambda: mc.frameworks()[fw.id]["suppressed"])
    fw.driver.declineOffer(again.id, filters={"refuse_seconds": 0})
    sent = mc.offers_sent
    # Nothing is offered while suppressed (polled for 1 s by the emulator's own clock).
    with pytest.raises(TimeoutError):
        mc.wait_for(lambda: mc.offers_sent > sent, timeout=1.0)
    fw.driver.reviveOffers()  # also clears the 60 s filter
    offers = [fw.offer(), fw.offer()]
    assert {o.agent_id.value for o in offers} == set(mc.agents())
    assert mc.call_count("SUPPRESS") == 1
    assert mc.call_count("REVIVE") == 1


def test_offers_shrink_while_tasks_run_and_grow_back(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    agent = offer.agent_id.value
    fw.driver.launchTasks(offer.id, [task_info("t", offer, "sleep 1", cpus=1.5, mem=1000)])
    fw.wait_state("t", "TASK_RUNNING")
    rest = fw.offer(agent)  # the remainder comes back at once (no filters in the ACCEPT)
    res = {r.name: r.scalar.value for r in rest.resources}
    assert res["cpus"] == pytest.approx(2.0 - 1.5 - 0.1)
    assert res["mem"] == 4096 - 1000 - 32
    assert mc.agents()[agent]["used"]["cpus"] == pytest.approx(1.6)
    fw.wait_state("t", "TASK_FINISHED")
    grown = fw.offer(agent)  # the task's resources are offered again
    assert {r.name: r.scalar.value for r in grown.resources}["cpus"] == pytest.approx(1.5)
    # Two offers of one agent merged in one ACCEPT (the executor is still there: no extra).
    fw.driver.launchTasks([rest.id, grown.id], [task_info("merged", grown, "true", cpus=1.8)])
    fw.wait_state("merged", "TASK_FINISHED")


def test_invalid_launches(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    too_big = task_info("big", offer, cpus=1.0)  # + 0.1 cpus for the executor
    fits = task_info("fits", offer, cpus=0.5)
    over = task_info("over", offer, cpus=0.5)  # 0.4 cpus left
    dup = task_info("fits", offer, cpus=0.1)
    neither = {**task_info("neither", offer), "executor": None}
    neither.pop("executor")
    no_command = task_info("nocmd", offer, executor={"executor_id": {"value": "bare"}})
    gpu = task_info("gpu", offer)
    gpu["resources"].append(scalar("gpus", 1))
    fw.driver.launchTasks(offer.id, [too_big, fits, over, dup, neither, no_command, gpu])
    fw.wait_state("big", "TASK_RUNNING")
    errors = {t: fw.wait_state(t, "TASK_ERROR") for t in ("over", "neither", "nocmd", "gpu")}
    for t, update in errors.items():
        assert update.reason == "REASON_TASK_INVALID", t
        assert update.source == "SOURCE_MASTER"
        assert "uuid" not in update
    assert "more resources" in errors["over"].message
    assert "Task should have at least one" in errors["neither"].message
    assert "must have a command" in errors["nocmd"].message
    fw.wait_state("fits", "TASK_ERROR")  # the duplicate
    [dup_error] = [
        u for u in fw.sched.updates if u.state == "TASK_ERROR" and u.task_id.value == "fits"
    ]
    assert "duplicate ID" in dup_error.message
    fw.wait_state("fits", "TASK_RUNNING")  # the first task of that id runs
    # Required fields of the TaskInfo proto: the whole call is refused (400).
    other = fw.offer()
    nameless = task_info("nameless", other)
    del nameless["name"]
    with pytest.raises(RuntimeError, match="400"):
        fw.driver._send(
            {
                "type": "ACCEPT",
                "framework_id": {"value": fw.id},
                "accept": {
                    "offer_ids": [other.id],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [nameless]}}],
                },
            }
        )
    assert "nameless" not in {t["task_id"] for t in mc.tasks()}


@pytest.mark.parametrize("partition_aware", [False, True])
def test_stale_offer(
    mesos_cluster: MesosCluster, start: Callable[..., Framework], partition_aware: bool
) -> None:
    caps = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    fw = start(capabilities=caps)
    offer = fw.offer()
    fw.driver.declineOffer(offer.id, filters={"refuse_seconds": 0})
    fw.driver.launchTasks(offer.id, [task_info("stale", offer)])
    state = "TASK_DROPPED" if partition_aware else "TASK_LOST"
    update = fw.wait_state("stale", state)
    assert update.reason == "REASON_INVALID_OFFERS"
    assert "uuid" not in update
    assert mesos_cluster.tasks() == []


def test_kill_running_and_unknown_tasks(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    fw = start()
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("sleeper", offer, "sleep 30")])
    fw.wait_state("sleeper", "TASK_RUNNING")
    fw.driver.killTask({"value": "sleeper"})
    killed = fw.wait_state("sleeper", "TASK_KILLED")
    assert killed.source == "SOURCE_EXECUTOR"
    fw.driver.killTask({"value": "nobody"})
    lost = fw.wait_state("nobody", "TASK_LOST")
    assert "uuid" not in lost
    assert lost.reason == "REASON_RECONCILIATION"
    assert mesos_cluster.call_count("KILL") == 2


def test_reconcile_explicit_and_implicit(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    fw = start()
    offer = fw.offer()
    fw.driver.launchTasks(
        offer.id, [task_info("a", offer, "sleep 30"), task_info("b", offer, "sleep 30")]
    )
    fw.wait_state("a", "TASK_RUNNING")
    fw.wait_state("b", "TASK_RUNNING")
    n = len(fw.sched.updates)
    fw.driver.reconcileTasks([{"task_id": {"value": "a"}}, {"task_id": {"value": "ghost"}}])
    mesos_cluster.wait_for(lambda: len(fw.sched.updates) >= n + 2)
    a, ghost = fw.sched.updates[n : n + 2]
    assert (a.task_id.value, a.state, a.reason) == ("a", "TASK_RUNNING", "REASON_RECONCILIATION")
    assert "uuid" not in a
    assert (ghost.task_id.value, ghost.state) == ("ghost", "TASK_LOST")
    fw.driver.reconcileTasks([])
    mesos_cluster.wait_for(lambda: len(fw.sched.updates) >= n + 4)
    implicit = fw.sched.updates[n + 2 : n + 4]
    assert sorted(u.task_id.value for u in implicit) == ["a", "b"]
    assert {u.reason for u in implicit} == {"REASON_RECONCILIATION"}
    assert mesos_cluster.call_count("RECONCILE") == 2


@pytest.mark.parametrize("partition_aware", [False, True])
def test_remove_agent(
    mesos_cluster: MesosCluster, start: Callable[..., Framework], partition_aware: bool
) -> None:
    mc = mesos_cluster
    caps = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    fw = start(capabilities=caps)
    offer = fw.offer()
    agent = offer.agent_id.value
    fw.driver.launchTasks(offer.id, [task_info("doomed", offer, "sleep 30", cpus=0.2)])
    fw.wait_state("doomed", "TASK_RUNNING")
    held = fw.offer(agent)  # the remainder, held by the framework
    mc.wait_for(lambda: running_executors(mc))
    mc.remove_agent(agent)
    state = "TASK_GONE" if partition_aware else "TASK_LOST"
    lost = fw.wait_state("doomed", state)
    assert (lost.reason, lost.source) == ("REASON_AGENT_REMOVED", "SOURCE_MASTER")
    assert "uuid" not in lost
    mc.wait_for(lambda: fw.sched.agents_lost == [agent])
    mc.wait_for(lambda: held.id.value in fw.sched.rescinded)
    assert mc.offers_rescinded >= 1
    mc.wait_for(lambda: not running_executors(mc))
    assert not mc.agents()[agent]["active"]
    # No more offers from it; the other agent's still come.
    other = fw.offer()
    assert other.agent_id.value != agent


def test_failover_within_the_timeout(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start(failover_timeout=30)
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("survivor", offer, "sleep 30")])
    fw.wait_state("survivor", "TASK_RUNNING")
    # The master cuts the stream: pymesos resubscribes at once, with the same framework id.
    mc.disconnect_schedulers()
    mc.wait_for(lambda: fw.sched.reregistrations == 1)
    assert fw.sched.disconnections == 1
    assert mc.call_count("SUBSCRIBE") == 2
    # The scheduler goes away (no TEARDOWN); a new one subscribes with the id.
    fw.driver.stop(failover=True)
    fw.driver.join()
    mc.wait_for(lambda: not mc.frameworks()[fw.id]["connected"])
    assert [t["state"] for t in mc.tasks(fw.id)] == ["TASK_RUNNING"]
    sched = Recorder()
    driver = MesosSchedulerDriver(
        sched,
        {"user": "tester", "name": "emulator-test", "failover_timeout": 30, "id": {"value": fw.id}},
        mc.master,
        use_addict=True,
    )
    driver.start()
    try:
        mc.wait_for(lambda: sched.reregistrations == 1)
        assert sched.registrations == 0
        driver.reconcileTasks([{"task_id": {"value": "survivor"}}])
        mc.wait_for(lambda: [u.state for u in sched.updates] == ["TASK_RUNNING"])
        assert mc.frameworks()[fw.id]["connected"]
    finally:
        driver.stop()  # TEARDOWN: the framework and its tasks go
        driver.join()
    mc.wait_for(lambda: fw.id not in mc.frameworks())
    mc.wait_for(lambda: not running_executors(mc))
    assert [t["state"] for t in mc.tasks(fw.id)] == ["TASK_KILLED"]
    assert mc.call_count("TEARDOWN") == 1


def test_failover_timeout_expiry_kills_the_tasks(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start(failover_timeout=1)
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("orphan", offer, "sleep 30")])
    fw.wait_state("orphan", "TASK_RUNNING")
    fw.driver.stop(failover=True)
    fw.driver.join()
    mc.wait_for(lambda: fw.id not in mc.frameworks(), timeout=10)
    mc.wait_for(lambda: not running_executors(mc), timeout=10)
    assert [t["state"] for t in mc.tasks(fw.id)] == ["TASK_KILLED"]
    sched = Recorder()
    driver = MesosSchedulerDriver(
        sched,
        {"user": "tester", "name": "emulator-test", "id": {"value": fw.id}},
        mc.master,
        use_addict=True,
    )
    driver.start()
    mc.wait_for(lambda: sched.errors)
    driver.join()
    assert sched.errors == ["Framework has been removed"]


def test_unacknowledged_updates_are_retried_in_order(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    mc.update_retry_interval = 0.3
    fw = start(implicit_acks=False)
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("quick", offer, "true")])
    mc.wait_for(lambda: len(fw.sched.states("quick")) >= 3)
    # Only TASK_RUNNING, again and again with its uuid: TASK_FINISHED waits behind it.
    running = [u for u in fw.sched.updates if u.task_id.value == "quick"]
    assert {u.state for u in running} == {"TASK_RUNNING"}
    assert len({u.uuid for u in running}) == 1
    assert mc.updates_retried >= 2
    # The master already knows the latest state; the task is not completed before the ack.
    assert mc.tasks(fw.id)[0]["state"] == "TASK_FINISHED"
    fw.driver.acknowledgeStatusUpdate(running[0])
    done = fw.wait_state("quick", "TASK_FINISHED")
    assert not mc.tasks(fw.id)[0]["completed"]
    fw.driver.acknowledgeStatusUpdate(done)
    mc.wait_for(lambda: mc.tasks(fw.id)[0]["completed"])
    n = len(fw.sched.updates)
    # Acknowledged: no more retries, and nothing ever after the terminal update.
    with pytest.raises(TimeoutError):
        mc.wait_for(lambda: len(fw.sched.updates) > n, timeout=0.8)
    assert fw.sched.states("quick")[-1] == "TASK_FINISHED"


def test_executor_killed(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("victim", offer, "sleep 30")])
    fw.wait_state("victim", "TASK_RUNNING")
    procs = mc.wait_for(lambda: running_executors(mc))
    found = [p for p in procs if str(EXECUTOR_SCRIPT) in p.cmdline()]
    assert len(found) == 1, [p.cmdline() for p in procs]
    executor = found[0]
    env = executor.environ()
    assert env["MESOS_AGENT_ENDPOINT"] == mc.agents()[offer.agent_id.value]["address"]
    assert env["MESOS_FRAMEWORK_ID"] == fw.id
    assert env["MESOS_EXECUTOR_ID"] == "test-executor"
    assert env["MESOS_DIRECTORY"] == executor.cwd()
    assert "MESOS_LOCAL" not in env
    assert os.getsid(executor.pid) == executor.pid  # its own session
    executor.kill()
    failed = fw.wait_state("victim", "TASK_FAILED")
    assert (failed.reason, failed.source) == ("REASON_EXECUTOR_TERMINATED", "SOURCE_AGENT")
    assert failed.uuid
    mc.wait_for(lambda: fw.sched.executors_lost)
    assert fw.sched.executors_lost == [("test-executor", offer.agent_id.value, 9)]
    mc.wait_for(lambda: not running_executors(mc))


def test_basic_auth(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    mc = mesos_cluster
    secret = "s3cr3t-" + "x" * 8
    mc.require_auth("jobfleet", secret)
    subscribe = {
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {"user": "u", "name": "n"}},
    }
    code, _ = post(mc, subscribe)
    assert code == 401
    wrong = base64.b64encode(b"jobfleet:nope").decode()
    code, _ = post(mc, subscribe, {"Authorization": f"Basic {wrong}"})
    assert code == 401
    fw = start(principal="jobfleet", secret=secret)
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("authed", offer)])
    fw.wait_state("authed", "TASK_FINISHED")
    assert mc.frameworks()[fw.id]["connected"]
    text = mc.all_text()
    assert "authed" in text
    assert secret not in text
    assert base64.b64encode(f"jobfleet:{secret}".encode()).decode() not in text


def test_malformed_calls_are_refused(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    assert post(mc, b"{not json")[0] == 400
    assert post(mc, b"[1, 2]")[0] == 400
    assert post(mc, {"subscribe": {}})[0] == 400
    no_user = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "n"}}}
    assert post(mc, no_user)[0] == 400
    fw = start()
    decline = {"type": "DECLINE", "framework_id": {"value": fw.id}, "decline": {"offer_ids": []}}
    code, body = post(mc, decline)  # no Mesos-Stream-Id
    assert code == 400
    assert b"Mesos-Stream-Id" in body
    assert post(mc, decline, {"Mesos-Stream-Id": "not-the-stream"})[0] == 400
    unknown = {**decline, "framework_id": {"value": "nobody"}}
    assert post(mc, unknown, {"Mesos-Stream-Id": "x"})[0] == 400
    with pytest.raises(RuntimeError, match="400"):
        fw.driver._send({"type": "ACKNOWLEDGE", "framework_id": {"value": fw.id}})
    with pytest.raises(RuntimeError, match="400"):
        fw.driver._send({"type": "FROBNICATE", "framework_id": {"value": fw.id}})
    with pytest.raises(RuntimeError, match="400"):
        fw.driver._send("")  # an empty body
    assert mc.frameworks()[fw.id]["connected"]
    with urllib.request.urlopen(mc.master_url + "/version", timeout=5) as resp:  # noqa: S310
        assert json.load(resp)["version"].startswith("1.")


def test_heartbeats(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    mesos_cluster.heartbeat_interval = 0.2
    fw = start()
    mesos_cluster.wait_for(lambda: fw.sched.heartbeats >= 3, timeout=5)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    mc = MesosCluster(tmp_path, agents=2)
    sched = Recorder()
    driver = MesosSchedulerDriver(
        sched, {"user": "tester", "name": "stopper"}, mc.master, use_addict=True
    )
    driver.start()
    try:
        offers = mc.wait_for(lambda: len(sched.offers) >= 2 and list(sched.offers), 10)
        for i, offer in enumerate(offers[:2]):
            # A task that escapes into its own session, as jobfleet's executor starts tasks.
            command = "setsid sleep 60 & sleep 60"
            driver.launchTasks(offer.id, [task_info(f"s{i}", offer, command)])
        mc.wait_for(lambda: len(running_executors(mc)) >= 6, 10)
    finally:
        driver.stop(failover=True)
        driver.join()
        mc.stop()
    assert running_executors(mc) == []
    assert not mc.internal_errors


def test_executor_that_never_subscribes(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    fw = start()
    offer = fw.offer()
    broken = executor_info("broken", command={"value": "echo no executor here >&2; exit 3"})
    fw.driver.launchTasks(offer.id, [task_info("stranded", offer, executor=broken)])
    failed = fw.wait_state("stranded", "TASK_FAILED")
    assert failed.reason == "REASON_EXECUTOR_TERMINATED"
    mc.wait_for(lambda: fw.sched.executors_lost == [("broken", offer.agent_id.value, 3 << 8)])
    assert fw.sched.states("stranded") == ["TASK_FAILED"]
    stderr = next(Path(mc.root).rglob("executors/broken/runs/*/stderr"))
    assert "no executor here" in stderr.read_text()


def test_idle_executor_is_shut_down_and_kept_between_tasks(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    mc = mesos_cluster
    mc.executor_idle_timeout = 1.0
    mc.executor_shutdown_grace_period = 0.2
    fw = start()
    offer = fw.offer()
    fw.driver.launchTasks(offer.id, [task_info("one", offer, "true")])
    fw.wait_state("one", "TASK_FINISHED")
    [pid] = [p.pid for p in running_executors(mc)]
    again = fw.offer(offer.agent_id.value)
    fw.driver.launchTasks(again.id, [task_info("two", again, "true")])
    fw.wait_state("two", "TASK_FINISHED")
    assert [p.pid for p in running_executors(mc)] == [pid]  # the same executor ran both
    mc.wait_for(lambda: fw.sched.executors_lost, timeout=5)
    assert fw.sched.executors_lost[0][:2] == ("test-executor", offer.agent_id.value)
    mc.wait_for(lambda: not running_executors(mc))
    assert [t["state"] for t in mc.tasks()] == ["TASK_FINISHED", "TASK_FINISHED"]


def test_kill_command_task(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    fw = start()
    offer = fw.offer()
    task = {
        "task_id": {"value": "cmd-sleep"},
        "agent_id": {"value": offer.agent_id.value},
        "name": "sleeping command",
        "command": {"value": "sleep 30"},
        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
    }
    fw.driver.launchTasks(offer.id, [task])
    fw.wait_state("cmd-sleep", "TASK_RUNNING")
    fw.driver.killTask({"value": "cmd-sleep"})
    fw.wait_state("cmd-sleep", "TASK_KILLED")
    assert fw.sched.executors_lost == []  # command executors are not reported
    mesos_cluster.wait_for(lambda: not running_executors(mesos_cluster))


def test_roles_and_attributes(mesos_cluster: MesosCluster, start: Callable[..., Framework]) -> None:
    mc = mesos_cluster
    spot = mc.add_agent(cpus=4, mem=8192, attributes={"preemptible": "true", "rack": 3})
    assert mc.agents()[spot]["hostname"] == "agent-3"
    assert mc.agent_id("agent-3") == spot
    fw = start(role="jobfleet")
    offer = fw.offer(spot)
    assert {r.allocation_info.role for r in offer.resources} == {"jobfleet"}
    attrs = {a.name: a for a in offer.attributes}
    assert attrs["preemptible"].text.value == "true"
    assert attrs["rack"].scalar.value == 3.0
    assert mc.frameworks()[fw.id]["role"] == "jobfleet"


def test_event_streams_are_bounded() -> None:
    from mesos_emulator.http import Stream

    stream = Stream("s", maxsize=2)
    assert stream.send({"type": "HEARTBEAT"})
    assert stream.send({"type": "HEARTBEAT"})
    assert not stream.send({"type": "HEARTBEAT"})  # a subscriber that stopped reading is cut
    assert stream.overflowed
    assert stream.cut


def test_kill_and_shutdown_from_the_cluster_side(
    mesos_cluster: MesosCluster, start: Callable[..., Framework]
) -> None:
    """mc.kill_task (an operator's kill) and mc.shutdown_executor (an agent's SHUTDOWN): the
    framework asked for neither, and makes no call."""
    mc = mesos_cluster
    mc.executor_shutdown_grace_period = 0.5
    fw = start()
    offer = fw.offer()
    fw.driver.launchTasks(
        offer.id, [task_info("a", offer, "sleep 30"), task_info("b", offer, "sleep 30")]
    )
    fw.wait_state("a", "TASK_RUNNING")
    fw.wait_state("b", "TASK_RUNNING")
    calls = mc.call_count("KILL") + mc.call_count("SHUTDOWN")
    mc.kill_task("a")
    assert fw.wait_state("a", "TASK_KILLED").source == "SOURCE_EXECUTOR"
    assert fw.sched.last("b").state == "TASK_RUNNING"
    with pytest.raises(KeyError):
        mc.kill_task("a")  # no longer live
    with pytest.raises(KeyError):
        mc.shutdown_executor(offer.agent_id.value, fw.id, "no-such-executor")
    mc.shutdown_executor(offer.hostname, fw.id, "test-executor")
    # The test executor kills its processes on SHUTDOWN and exits: the agent reports the task.
    mc.wait_for(lambda: fw.sched.last("b").state != "TASK_RUNNING", 20)
    assert fw.sched.last("b").state in ("TASK_FAILED", "TASK_KILLED")
    mc.wait_for(lambda: fw.sched.executors_lost)
    assert mc.call_count("KILL") + mc.call_count("SHUTDOWN") == calls
