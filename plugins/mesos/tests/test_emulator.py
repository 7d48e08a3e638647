"""The loopback Mesos master and agents (mesos_emulator/), driven through pymesos itself."""

from __future__ import annotations

import base64
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

    def wait_state(self, task_id: str, state: str, timeout: float = 20) -> Any:
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
