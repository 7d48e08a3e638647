"""The Mesos backend's own behaviour on the loopback master: packing, kills, agent loss,
drained agents, idle offers, secrets, failover with the journal."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.channel import FinalReport
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.testing import KitHost
from jobfleet.core.testing.host import wait_for
from jobfleet.plugins.mesos.distributor import MesosDistributor


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


helpers = _load("mesos_helpers")


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[KitHost]:
    host = KitHost(tmp_path / "kit", "http", state_dir=True)
    try:
        yield host
    finally:
        host.close()


def distributor(mc: Any, kit: KitHost, **overrides: Any) -> MesosDistributor:
    return MesosDistributor(
        "test", settings=helpers.settings_for(mc, **overrides), **kit.distributor_kwargs()
    )


def finished(d: MesosDistributor, did: str) -> Any:
    info = d.get_remote_exit_info(did)
    return info if info.finalized else None


def test_small_tasks_fill_each_offer_and_never_more(mesos_cluster: Any, kit: KitHost) -> None:
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        wait_for(lambda: d.framework_id, "the framework's subscription")
        commands = ["sleep 1"] * 8  # 0.5 cores each: 4 per agent of 2 cpus
        subs = kit.submit_array(d, commands, {"cores": 0.5, "memory": "64M"})
        assert mc.call_count("ACCEPT") >= 0
        for sub in subs:
            wait_for(lambda sub=sub: finished(d, sub.distributor_id), "the tasks' ends", 60)
        assert sum(d.tasks_per_accept) == 8
        assert max(d.tasks_per_accept) == 4, d.tasks_per_accept  # a whole agent per ACCEPT
        assert mc.call_count("ACCEPT") == len(d.tasks_per_accept) <= 4
        for agent in mc.agents().values():
            assert agent["used"].get("cpus", 0) <= agent["total"]["cpus"]
        assert {r[0].error_state for r in kit.final_reports().values()} == {ErrorState.DONE}
    finally:
        d.stop()


def test_a_task_larger_than_any_agent_is_a_queueing_error(mesos_cluster: Any, kit: KitHost) -> None:
    d = distributor(mesos_cluster, kit, unplaceable_timeout=0.5)
    d.start()
    try:
        big = kit.submit(d, "true", resources={"cores": 16, "memory": "64M"})
        small = kit.submit(d, "true", resources={"cores": 1, "memory": "64M"})
        errors = wait_for(
            lambda: d.get_queueing_errors([big.distributor_id, small.distributor_id]),
            "a queueing error",
        )
        assert list(errors) == [big.distributor_id]
        assert "no Mesos agent can hold the task" in errors[big.distributor_id]
        wait_for(lambda: finished(d, small.distributor_id), "the small task's end")
        d.terminate_task_instances([big.distributor_id])
        assert d.get_remote_exit_info(big.distributor_id).error_state is ErrorState.KILL_SELF
    finally:
        d.stop()


def test_kill_of_running_and_of_waiting_tasks(mesos_cluster: Any, kit: KitHost) -> None:
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        # 2 cores each: one per agent runs, the third waits for an offer.
        subs = [
            kit.submit(d, "sleep 600", resources={"cores": 2, "memory": "64M"}) for _ in range(3)
        ]
        wait_for(lambda: len(kit.started()) == 2, "two running tasks")
        running = [s for s in subs if s.task_instance_id in kit.started()]
        (waiting,) = [s for s in subs if s.task_instance_id not in kit.started()]
        d.terminate_task_instances([running[0].distributor_id, waiting.distributor_id])
        for sub in (running[0], waiting):
            info = d.get_remote_exit_info(sub.distributor_id)
            assert info.error_state is ErrorState.KILL_SELF, info
        assert running[0].distributor_id not in d.get_submitted_or_running(
            [s.distributor_id for s in subs]
        )
        time.sleep(2)  # the freed agent is offered again: the dropped task must not launch
        assert waiting.task_instance_id not in kit.started()
        assert waiting.distributor_id not in {t["task_id"] for t in mc.tasks()}
        assert mc.call_count("KILL") >= 1
    finally:
        d.stop()
    assert all(t["state"] != "TASK_RUNNING" for t in mc.tasks())


def test_agent_loss_is_unknown_and_a_retry_runs_elsewhere(mesos_cluster: Any, kit: KitHost) -> None:
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        first = kit.submit(d, "sleep 600", resources={"cores": 1, "memory": "64M"})
        wait_for(lambda: first.task_instance_id in kit.started(), "the task's start")
        (task,) = [t for t in mc.tasks() if t["task_id"] == first.distributor_id]
        mc.remove_agent(task["agent_id"])
        info = wait_for(lambda: finished(d, first.distributor_id), "the task's loss")
        assert info.error_state is ErrorState.UNKNOWN_ERROR
        assert first.distributor_id not in d.get_submitted_or_running([first.distributor_id])
        # What the host does with a U: another attempt, which the remaining agent takes.
        retry = kit.submit(d, "echo again", resources={"cores": 1, "memory": "64M"})
        info = wait_for(lambda: finished(d, retry.distributor_id), "the retry's end")
        assert info.error_state is ErrorState.DONE
        (again,) = [t for t in mc.tasks() if t["task_id"] == retry.distributor_id]
        assert again["agent_id"] != task["agent_id"]
    finally:
        d.stop()


def test_an_ignored_agent_gets_no_new_task_and_nodes_are_reported(
    mesos_cluster: Any, kit: KitHost
) -> None:
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        first = kit.submit(d, "sleep 600", resources={"cores": 2, "memory": "64M"})
        wait_for(lambda: first.task_instance_id in kit.started(), "the first task's start")
        (task,) = [t for t in mc.tasks() if t["task_id"] == first.distributor_id]
        busy = mc.agents()[task["agent_id"]]["hostname"]
        nodes = wait_for(lambda: len(d.get_nodes()) == 2 and d.get_nodes(), "two nodes")
        assert nodes[busy].workers == 1
        assert nodes[busy].requested_cores == 2
        assert nodes[busy].cores_total == 2
        assert d.node_in_use(busy)
        other = next(name for name in nodes if name != busy)
        assert not d.node_in_use(other)
        d.ignore_node(other)
        # The busy agent is full, the other ignored: the second task must wait.
        second = kit.submit(d, "echo second", resources={"cores": 1, "memory": "64M"})
        time.sleep(2.5)
        assert second.task_instance_id not in kit.started()
        assert second.distributor_id in d.get_submitted_or_running([second.distributor_id])
        assert d.get_nodes(timeout=60)  # seen recently
        assert d.get_nodes(preemptible=True) == {}
        d.unignore_node(other)
        info = wait_for(lambda: finished(d, second.distributor_id), "the second task's end")
        assert info.error_state is ErrorState.DONE
        (placed,) = [t for t in mc.tasks() if t["task_id"] == second.distributor_id]
        assert mc.agents()[placed["agent_id"]]["hostname"] == other
        assert first.distributor_id in d.get_submitted_or_running([first.distributor_id])
    finally:
        d.stop()


def test_preemptible_agents_take_only_preemptible_tasks(tmp_path: Path, kit: KitHost) -> None:
    emulator = sys.modules["mesos_emulator"]
    mc = emulator.MesosCluster(tmp_path / "mesos", agents=0)
    try:
        spot = mc.add_agent(cpus=2.0, attributes={"preemptible": "true"})
        d = distributor(mc, kit, unplaceable_timeout=0.5)
        d.start()
        try:
            plain = kit.submit(d, "true", resources={"cores": 1, "memory": "64M"})
            cheap = kit.submit(
                d, "true", resources={"cores": 1, "memory": "64M", "preemptible": True}
            )
            wait_for(lambda: finished(d, cheap.distributor_id), "the preemptible task's end")
            errors = wait_for(
                lambda: d.get_queueing_errors([plain.distributor_id]), "a queueing error"
            )
            assert "preemptib" in errors[plain.distributor_id]
            assert [t["agent_id"] for t in mc.tasks()] == [spot]
            assert list(d.get_nodes(preemptible=True)) == [mc.agents()[spot]["hostname"]]
        finally:
            d.stop()
    finally:
        mc.stop()


def test_idle_offers_are_declined_and_suppressed(mesos_cluster: Any, kit: KitHost) -> None:
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        wait_for(lambda: d.framework_id, "the framework's subscription")
        sub = kit.submit(d, "true", resources={"cores": 2, "memory": "64M"})
        wait_for(lambda: finished(d, sub.distributor_id), "the task's end")
        wait_for(lambda: mc.call_count("SUPPRESS") >= 1, "a SUPPRESS")
        (framework,) = mc.frameworks().values()
        assert framework["suppressed"]
        mc.reset_counts()
        sent = mc.offers_sent
        time.sleep(2)
        assert mc.offers_sent == sent  # nothing waits: no offer comes
        assert mc.call_count() == mc.call_count("ACKNOWLEDGE")
        # With work that fits one agent only, the other agent's offer is declined.
        d.ignore_node(next(iter(d.get_nodes())))
        other = kit.submit(d, "true", resources={"cores": 1, "memory": "64M"})
        wait_for(lambda: finished(d, other.distributor_id), "the next task's end")
        assert mc.call_count("REVIVE") >= 1
        assert mc.call_count("DECLINE") >= 1
        wait_for(lambda: mc.frameworks()[d.framework_id]["suppressed"], "suppressed again")
    finally:
        d.stop()


def test_secret_and_channel_token_never_travel_in_clear_or_in_logs(
    mesos_cluster: Any, kit: KitHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mc = mesos_cluster
    secret = "s3cret-" + "x" * 20
    mc.require_auth("jobfleet-principal", secret)
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    caplog.set_level(logging.DEBUG)
    d = distributor(mc, kit, principal="jobfleet-principal", secret_file=secret_file)
    d.start()
    try:
        sub = kit.submit(d, "echo fine", resources={"cores": 1, "memory": "64M"})
        info = wait_for(lambda: finished(d, sub.distributor_id), "the task's end")
        assert info.error_state is ErrorState.DONE
        (framework,) = mc.frameworks().values()
        assert framework["principal"] == "jobfleet-principal"
    finally:
        d.stop()
    token = kit.token
    assert token
    text = mc.all_text()
    assert secret not in text
    assert token not in text
    assert secret not in caplog.text
    assert token not in caplog.text
    assert secret not in repr(d.settings)


def test_a_wrong_secret_fails_the_start_with_what_to_check(
    mesos_cluster: Any, kit: KitHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 401 at SUBSCRIBE: a BackendError from start() that names the master, says the
    credentials were refused and which settings to check; never the secret, never pymesos'
    `can't concat str to bytes`."""
    mc = mesos_cluster
    mc.require_auth("jobfleet-principal", "right")
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret-value")
    caplog.set_level(logging.DEBUG)
    d = distributor(mc, kit, principal="jobfleet-principal", secret_file=secret_file)
    with pytest.raises(BackendError) as raised:
        d.start()
    message = str(raised.value)
    assert mc.master in message
    assert "refused the framework's credentials (HTTP 401" in message
    assert "jobfleet-principal" in message
    assert str(secret_file) in message
    assert "secret_file" in message
    assert "wrong-secret-value" not in message
    assert "wrong-secret-value" not in caplog.text
    assert "concat" not in message
    assert d.framework_id is None
    assert not mc.frameworks()
    time.sleep(1.0)  # a new driver would come after 0.5 s
    assert mc.all_text().count('"type": "SUBSCRIBE"') == 1  # not retried: same credentials
    d.stop()  # nothing to stop


def test_no_credentials_for_a_master_that_wants_them(mesos_cluster: Any, kit: KitHost) -> None:
    mesos_cluster.require_auth("jobfleet-principal", "right")
    d = distributor(mesos_cluster, kit)
    with pytest.raises(BackendError, match=r"requires authentication \(HTTP 401.*`principal`"):
        d.start()


def test_credentials_refused_at_a_re_subscription_fail_the_status_rounds(
    mesos_cluster: Any, kit: KitHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master changes the secret, then the stream drops: the next SUBSCRIBE is refused and
    the first status round raises the same clear BackendError."""
    mc = mesos_cluster
    mc.require_auth("jobfleet-principal", "old-secret")
    monkeypatch.setenv("TEST_MESOS_SECRET", "old-secret")
    variable = "TEST_MESOS_SECRET"  # the name of a variable, not a secret
    d = distributor(mc, kit, principal="jobfleet-principal", secret_variable=variable)
    d.start()
    try:
        sub = kit.submit(d, "true", resources={"cores": 1, "memory": "64M"})
        wait_for(lambda: finished(d, sub.distributor_id), "the task's end")
        mc.require_auth("jobfleet-principal", "new-secret")
        mc.disconnect_schedulers()
        wait_for(lambda: d._refused, "the refusal")
        with pytest.raises(BackendError) as raised:
            d.get_submitted_or_running([sub.distributor_id])
        message = str(raised.value)
        assert mc.master in message
        assert "refused the framework's credentials (HTTP 401" in message
        assert "$TEST_MESOS_SECRET (setting `secret_variable`)" in message
        assert "old-secret" not in message
    finally:
        d.stop()


def test_a_new_distributor_on_the_same_state_takes_the_framework_up(
    mesos_cluster: Any, kit: KitHost, tmp_path: Path
) -> None:
    """As after a host crash (the driver dropped without TEARDOWN): the same framework id,
    RECONCILE of the live tasks, each task's end seen once."""
    mc = mesos_cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    d1 = distributor(mc, kit)
    d1.start()
    subs = [
        kit.submit(
            d1, f"sleep 2; echo ran >> {marks}/{n}", resources={"cores": 0.5, "memory": "64M"}
        )
        for n in range(4)
    ]
    wait_for(lambda: len(kit.started()) == 4, "four running tasks")
    framework = d1.framework_id
    d1._stopping.set()
    d1._driver.stop(failover=True)  # no TEARDOWN: the master keeps the framework
    d1._driver.join()
    d1._journal.close()
    mc.reset_counts()
    d2 = distributor(mc, kit)
    d2.start()
    try:
        wait_for(lambda: d2.framework_id, "the re-subscription")
        assert d2.framework_id == framework
        ids = [s.distributor_id for s in subs]
        assert d2.get_submitted_or_running(ids) <= set(ids)
        for did in ids:
            info = wait_for(lambda did=did: finished(d2, did), "the tasks' ends", 60)
            assert info.error_state is ErrorState.DONE
        assert mc.call_count("RECONCILE") >= 1
        assert mc.call_count("SUBSCRIBE") == 1
        assert sorted(p.name for p in marks.iterdir()) == ["0", "1", "2", "3"]
        assert all(p.read_text() == "ran\n" for p in marks.iterdir())
        assert all(len(r) == 1 for r in kit.final_reports().values())
        assert all(isinstance(r[0], FinalReport) for r in kit.final_reports().values())
    finally:
        d2.stop()


def test_a_task_killed_by_someone_else_is_fatal_not_ours(mesos_cluster: Any, kit: KitHost) -> None:
    """TASK_KILLED the host never asked for (an operator's kill, mc.kill_task): F, not K."""
    mc = mesos_cluster
    d = distributor(mc, kit)
    d.start()
    try:
        sub = kit.submit(d, "sleep 600", resources={"cores": 1, "memory": "64M"})
        wait_for(lambda: sub.task_instance_id in kit.started(), "the task's start")
        calls = mc.call_count("KILL")
        mc.kill_task(sub.distributor_id)
        info = wait_for(lambda: finished(d, sub.distributor_id), "the task's end")
        assert info.error_state is ErrorState.ERROR_FATAL, info
        assert "someone else" in info.error_message
        assert mc.call_count("KILL") == calls  # the framework sent none
        (task,) = [t for t in mc.tasks() if t["task_id"] == sub.distributor_id]
        assert task["state"] == "TASK_KILLED"
    finally:
        d.stop()


def test_an_executor_shut_down_under_its_tasks_ends_them_unknown(
    mesos_cluster: Any, kit: KitHost
) -> None:
    """SHUTDOWN of jobfleet's executor (the agent's, not the framework's) with two tasks
    running: both end U (retried by the host), never D."""
    mc = mesos_cluster
    mc.executor_shutdown_grace_period = 5.0
    d = distributor(mc, kit)
    d.start()
    try:
        subs = kit.submit_array(d, ["sleep 600"] * 2, {"cores": 1, "memory": "64M"})
        wait_for(lambda: len(kit.started()) == 2, "two running tasks")
        agents = {t["agent_id"] for t in mc.tasks()}
        for agent in agents:
            mc.shutdown_executor(agent, d.framework_id, "jobfleet")
        for sub in subs:
            info = wait_for(lambda sub=sub: finished(d, sub.distributor_id), "the tasks' ends", 30)
            assert info.error_state is ErrorState.UNKNOWN_ERROR, info
        assert mc.call_count("SHUTDOWN") == 0
        for sub in subs:
            reports = kit.final_reports().get(sub.task_instance_id, [])
            assert all(r.error_state is not ErrorState.DONE for r in reports), reports
        assert {t["state"] for t in mc.tasks()} <= {"TASK_KILLED", "TASK_FAILED"}
    finally:
        d.stop()


def test_a_task_description_the_master_refuses_is_fatal_with_its_reason(
    tmp_path: Path, kit: KitHost
) -> None:
    """TASK_ERROR: the framework taken up by a host whose executor settings changed sends an
    ExecutorInfo that the agent's running executor (same id) is not compatible with."""
    emulator = sys.modules["mesos_emulator"]
    mc = emulator.MesosCluster(tmp_path / "mesos", agents=1)
    mc.executor_idle_timeout = None
    try:
        d1 = distributor(mc, kit)
        d1.start()
        first = kit.submit(d1, "sleep 600", resources={"cores": 1, "memory": "64M"})
        wait_for(lambda: first.task_instance_id in kit.started(), "the first task's start")
        d1._stopping.set()
        d1._driver.stop(failover=True)  # a host crash: the framework stays
        d1._driver.join()
        d1._journal.close()
        d2 = distributor(mc, kit, node_report_interval=7.0)  # another ExecutorInfo
        d2.start()
        try:
            wait_for(lambda: d2.framework_id, "the re-subscription")
            second = kit.submit(d2, "true", resources={"cores": 0.5, "memory": "64M"})
            info = wait_for(lambda: finished(d2, second.distributor_id), "the refusal")
            assert info.error_state is ErrorState.ERROR_FATAL, info
            assert "TASK_ERROR" in info.error_message
            assert "not compatible with the running executor" in info.error_message
            assert second.task_instance_id not in kit.started()
            assert first.distributor_id in d2.get_submitted_or_running([first.distributor_id])
        finally:
            d2.stop()
        info = d2.get_remote_exit_info(first.distributor_id)
        assert info.error_state is ErrorState.KILL_SELF, info
    finally:
        mc.stop()


def test_a_master_disconnect_re_subscribes_the_same_framework_and_loses_nothing(
    mesos_cluster: Any, kit: KitHost, tmp_path: Path
) -> None:
    """mc.disconnect_schedulers() while tasks run: the distributor backs off, subscribes again
    as the same framework, and every task ends D exactly once."""
    mc = mesos_cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    d = distributor(mc, kit)
    d.start()
    try:
        framework = d.framework_id
        subs = [
            kit.submit(
                d, f"sleep 2; echo ran >> {marks}/{n}", resources={"cores": 0.5, "memory": "64M"}
            )
            for n in range(6)
        ]
        wait_for(lambda: len(kit.started()) == 6, "six running tasks")
        mc.reset_counts()
        cut = time.monotonic()
        mc.disconnect_schedulers()
        wait_for(lambda: mc.call_count("SUBSCRIBE") >= 1, "the re-subscription")
        assert time.monotonic() - cut >= 0.2  # backed off, not at once
        wait_for(lambda: mc.frameworks()[framework]["connected"], "the framework connected")
        assert list(mc.frameworks()) == [framework]
        assert d.framework_id == framework
        ids = [s.distributor_id for s in subs]
        for did in ids:
            info = wait_for(lambda did=did: finished(d, did), "the tasks' ends", 60)
            assert info.error_state is ErrorState.DONE, info
        assert sorted(p.name for p in marks.iterdir()) == [str(n) for n in range(6)]
        assert all(p.read_text() == "ran\n" for p in marks.iterdir())
        assert all(len(r) == 1 for r in kit.final_reports().values())
        assert len(kit.final_reports()) == 6
        assert len({t["task_id"] for t in mc.tasks()}) == 6  # none launched twice
    finally:
        d.stop()


def test_placement_constraints_choose_the_agents(tmp_path: Path, kit: KitHost) -> None:
    """placement=rack=r1|r2,ssd: only agents with rack r1 or r2 *and* an ssd attribute take
    tasks; a task only an excluded agent could hold is a queueing error that says so."""
    emulator = sys.modules["mesos_emulator"]
    mc = emulator.MesosCluster(tmp_path / "mesos", agents=0)
    try:
        mc.add_agent(cpus=2.0, attributes={"rack": "r1"}, hostname="no-ssd")
        good = mc.add_agent(cpus=2.0, attributes={"rack": "r2", "ssd": "yes"}, hostname="good")
        mc.add_agent(cpus=4.0, attributes={"ssd": "yes"}, hostname="no-rack")
        mc.add_agent(cpus=4.0, attributes={"rack": "r3", "ssd": "yes"}, hostname="other-rack")
        d = distributor(mc, kit, placement="rack=r1|r2,ssd", unplaceable_timeout=0.5)
        d.start()
        try:
            subs = kit.submit_array(d, ["sleep 0.5"] * 4, {"cores": 1, "memory": "64M"})
            big = kit.submit(d, "true", resources={"cores": 3, "memory": "64M"})
            for sub in subs:
                info = wait_for(lambda sub=sub: finished(d, sub.distributor_id), "the ends", 60)
                assert info.error_state is ErrorState.DONE, info
            errors = wait_for(
                lambda: d.get_queueing_errors([big.distributor_id]), "a queueing error"
            )
            assert "placement" in errors[big.distributor_id]
            assert {t["agent_id"] for t in mc.tasks()} == {good}
            assert big.task_instance_id not in kit.started()
            d.terminate_task_instances([big.distributor_id])
        finally:
            d.stop()
    finally:
        mc.stop()
