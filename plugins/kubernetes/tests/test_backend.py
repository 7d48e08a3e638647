"""The Kubernetes backend's own behaviour, against the emulator (or a real cluster).

Placement, queueing errors, the watch cut and resumed, API calls that do not grow with the
number of tasks, retries and refusals, kills of array steps, what stop() leaves, and the
channel token, which must never appear outside the run's Secret.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import ErrorState, ExitReason
from jobfleet.core.testing import KitHost
from jobfleet.core.testing.host import wait_for
from jobfleet.plugins.kubernetes.distributor import KubernetesDistributor

T = TypeVar("T")


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kube_target = _load("kube_target")
target = kube_target.target

MIB = 1 << 20


@pytest.fixture
def host(tmp_path: Path) -> Iterator[KitHost]:
    kit = KitHost(tmp_path / "kit", "http")
    try:
        yield kit
    finally:
        kit.close()


@contextmanager
def running(target: Any, host: KitHost, **settings: Any) -> Iterator[KubernetesDistributor]:
    distributor = KubernetesDistributor(
        "test", settings=target.settings(**settings), **host.distributor_kwargs()
    )
    distributor.start()
    try:
        yield distributor
    finally:
        distributor.stop()


def until(condition: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    return wait_for(condition, what, timeout)


def finished(distributor: KubernetesDistributor, ids: list[str]) -> bool:
    return not distributor.get_submitted_or_running(ids)


# -- placement (seed 003) -----------------------------------------------------------------------


def test_preemptible_work_lands_on_spot_nodes_and_other_work_never(
    target: Any, host: KitHost
) -> None:
    target.require_emulator("its node-b is the one spot node")
    with running(target, host) as distributor:
        spot = host.submit(distributor, "true", resources={"cores": 1, "preemptible": True})
        plain = [host.submit(distributor, "true", resources={"cores": 1}) for _ in range(3)]
        for job in [spot, *plain]:
            assert host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
        nodes = {did: pod["spec"].get("nodeName") for did, pod in distributor._pod_of.items()}
    assert nodes[spot.distributor_id] == "node-b"
    assert {nodes[job.distributor_id] for job in plain} == {"node-a"}


# -- queueing errors ------------------------------------------------------------------------------


def test_an_unschedulable_pod_is_a_queueing_error(target: Any, host: KitHost) -> None:
    with running(target, host, unschedulable_timeout=0.5) as distributor:
        job = host.submit(distributor, "true", resources={"cores": 500})
        errors = until(
            lambda: distributor.get_queueing_errors([job.distributor_id]), "a queueing error"
        )
        assert errors[job.distributor_id].startswith("Unschedulable")
        assert distributor.get_submitted_or_running([job.distributor_id]) == {job.distributor_id}


def test_an_image_that_cannot_be_pulled_is_a_queueing_error(target: Any, host: KitHost) -> None:
    emu = target.require_emulator("it fails image pulls on request")
    emu.fail_image_pull("registry.invalid/nothing:1")
    with running(target, host, image="registry.invalid/nothing:1") as distributor:
        job = host.submit(distributor, "true")
        errors = until(
            lambda: distributor.get_queueing_errors([job.distributor_id]), "a queueing error"
        )
    reason = errors[job.distributor_id].split(":", 1)[0]
    assert reason.lower() in ("errimagepull", "imagepullbackoff")


# -- exit info ------------------------------------------------------------------------------------


def test_a_pod_over_its_memory_limit_is_oomkilled_and_z(target: Any, host: KitHost) -> None:
    emu = target.require_emulator("its kubelet enforces limits through a memory cgroup")
    if not emu.enforces_memory:
        pytest.skip("the emulator has no writable v1 memory cgroup here (memory.limit_in_bytes)")
    hog = f"{sys.executable} -c \"b = b'x' * (400 << 20); import time; time.sleep(30)\""
    with running(target, host) as distributor:
        # No memory in the spec: the wrapper does not limit it, Kubernetes' limit must bite.
        job = host.submit(distributor, hog, resources={"memory": "150M"})
        until(lambda: finished(distributor, [job.distributor_id]), "the pod to end")
        info = until(
            lambda: (i := distributor.get_remote_exit_info(job.distributor_id)).finalized and i,
            "a final exit info",
        )
    assert info.error_state is ErrorState.RESOURCE_ERROR, info.error_message
    assert info.record is not None
    assert info.record.reason is ExitReason.OOM


def test_a_finished_job_removed_by_ttl_keeps_its_outcome(target: Any, host: KitHost) -> None:
    with running(target, host, ttl_after_finished=0) as distributor:
        job = host.submit(distributor, "exit 4")
        until(lambda: finished(distributor, [job.distributor_id]), "the Job to end")
        until(
            lambda: distributor._job_of and job.distributor_id in distributor._job_gone,
            "the cluster to delete the finished Job",
        )
        info = distributor.get_remote_exit_info(job.distributor_id)
    assert info.finalized
    assert info.error_state is ErrorState.ERROR_RECOVERABLE, info.error_message


# -- the watch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_event", [False, True], ids=["410-status", "410-error-event"])
def test_a_cut_watch_resumes_without_losing_or_repeating_a_transition(
    target: Any, host: KitHost, as_event: bool
) -> None:
    emu = target.require_emulator("it cuts watches and compacts history on request")
    with running(target, host) as distributor:
        steps = host.submit_array(distributor, [f"sleep 0.{n}" for n in range(1, 9)])
        ids = [step.distributor_id for step in steps]
        assert distributor._pods is not None
        until(lambda: distributor.transitions, "the first pods")
        emu.compact()
        emu.cut_watches(gone=True, as_event=as_event)
        until(lambda: finished(distributor, ids), "every step to end", timeout=90)
        gone = distributor._pods.gone + (distributor._jobs.gone if distributor._jobs else 0)
        transitions = {did: list(distributor.transitions.get(did, [])) for did in ids}
        infos = [distributor.get_remote_exit_info(did) for did in ids]
    assert gone >= 1, "the 410 was not seen"
    for did, phases in transitions.items():
        assert phases, f"{did}: no transition seen"
        assert phases[-1] == "Succeeded", f"{did}: {phases}"
        assert len(phases) == len(set(phases)), f"{did} told twice: {phases}"
    assert [info.error_state for info in infos] == [ErrorState.DONE] * len(ids)


# -- API calls ------------------------------------------------------------------------------------


def _calls_for_an_array(target: Any, host: KitHost, size: int) -> dict[str, int]:
    emu = target.emu
    with running(target, host) as distributor:
        emu.reset_counts()
        steps = host.submit_array(distributor, ["true"] * size)
        ids = [step.distributor_id for step in steps]
        creates = emu.request_count(verb="create", resource="jobs")
        rounds_before = sum(emu.request_count(verb=v) for v in ("list", "get"))
        for _ in range(20):
            distributor.get_submitted_or_running(ids)
            distributor.get_queueing_errors(ids)
            for did in ids[:5]:
                distributor.get_remote_exit_info(did)
        in_rounds = sum(emu.request_count(verb=v) for v in ("list", "get")) - rounds_before
        until(lambda: finished(distributor, ids), "the array to end", timeout=120)
        done = [distributor.get_remote_exit_info(did).error_state for did in ids]
        watches = emu.request_count(verb="watch")
    assert done == [ErrorState.DONE] * size
    return {"creates": creates, "in_rounds": in_rounds, "watches": watches}


@pytest.mark.slow
def test_api_calls_do_not_grow_with_the_number_of_tasks(target: Any, tmp_path: Path) -> None:
    target.require_emulator("it counts the requests it serves")
    counts = {}
    for size in (5, 50):
        kit = KitHost(tmp_path / f"kit-{size}", "http")
        try:
            counts[size] = _calls_for_an_array(target, kit, size)
        finally:
            kit.close()
    assert counts[5]["creates"] == counts[50]["creates"] == 1, counts
    assert counts[5]["in_rounds"] == counts[50]["in_rounds"] == 0, counts
    assert counts[50]["watches"] <= counts[5]["watches"] + 2, counts


# -- API errors -----------------------------------------------------------------------------------


def test_429_and_5xx_are_retried(target: Any, host: KitHost) -> None:
    emu = target.require_emulator("it throttles and fails requests on request")
    with running(target, host) as distributor:
        emu.reset_counts()
        emu.throttle(2, retry_after=1, verb="create", resource="jobs")
        started = time.monotonic()
        first = distributor.submit_to_batch_distributor("job --task-instance-id 1", "a", {})
        waited = time.monotonic() - started
        emu.fail_next(2, status=503, verb="create", resource="jobs")
        second = distributor.submit_to_batch_distributor("job --task-instance-id 2", "b", {})
        emu.fail_next(1, status=500, verb="create", resource="jobs")
        third = distributor.submit_to_batch_distributor("job --task-instance-id 3", "c", {})
        creates = emu.request_count(verb="create", resource="jobs")
        distributor.terminate_task_instances([first, second, third])
    assert creates == 3 + 2 + 2 + 1
    assert waited >= 1.5, "Retry-After was not honoured"


def test_a_forbidden_call_is_a_clear_error_naming_the_permission(
    target: Any, host: KitHost
) -> None:
    emu = target.require_emulator("it forbids verbs on request")
    with running(target, host) as distributor:
        emu.forbid("create", "jobs")
        with pytest.raises(BackendError, match=r"'create' on 'jobs'") as caught:
            distributor.submit_to_batch_distributor("job --task-instance-id 1", "x", {})
        emu.allow("create", "jobs")
    assert "403" in str(caught.value)
    assert "the Job jf-" in str(caught.value)


def test_an_invalid_object_is_a_clear_error(target: Any, host: KitHost) -> None:
    with running(target, host) as distributor:
        # The settings refuse such a label; bypass them to reach the server's validation.
        object.__setattr__(distributor.settings, "labels", "team=not a label value!")
        with pytest.raises(BackendError, match=r"invalid \(422\)") as caught:
            distributor.submit_to_batch_distributor("job --task-instance-id 1", "x", {})
    assert "the Job jf-" in str(caught.value)


# -- kills and stop -------------------------------------------------------------------------------


def test_killing_an_array_step_deletes_its_pod_only(target: Any, host: KitHost) -> None:
    with running(target, host) as distributor:
        steps = host.submit_array(distributor, ["sleep 600"] * 3)
        for step in steps:
            host.wait_report(RunningReport, step.task_instance_id)
        ids = [step.distributor_id for step in steps]
        distributor.terminate_task_instances([ids[1]])
        assert distributor.get_submitted_or_running(ids) == {ids[0], ids[2]}
        assert distributor.get_remote_exit_info(ids[1]).error_state is ErrorState.KILL_SELF
        time.sleep(1.0)  # the Job controller had time to recreate the pod; it must not
        alive = [p for p in target.objects("pods") if not p["metadata"].get("deletionTimestamp")]
        assert len(alive) == 2, [p["metadata"]["name"] for p in alive]
        assert distributor.get_submitted_or_running(ids) == {ids[0], ids[2]}
        distributor.terminate_task_instances([ids[0], ids[2]])
        until(lambda: not target.objects("jobs"), "the whole Indexed Job to be deleted")
        finals = host.final_reports()
    assert {
        steps[n].task_instance_id: [
            f.error_state for f in finals.get(steps[n].task_instance_id, [])
        ]
        for n in range(3)
    } == {step.task_instance_id: ["K"] for step in steps}


def test_stop_leaves_no_job_pod_or_secret(target: Any, host: KitHost) -> None:
    with running(target, host) as distributor:
        host.submit(distributor, "sleep 600")
        host.submit_array(distributor, ["sleep 600"] * 3)
        until(lambda: len(target.objects("pods")) >= 4, "the pods")
        assert any(
            s["metadata"]["name"] == f"jf-{distributor.run}-channel"
            for s in target.objects("secrets")
        )
    mine = [
        obj["metadata"]["name"]
        for kind in ("jobs", "pods", "secrets")
        for obj in target.objects(kind)
        if obj["metadata"]["name"].startswith("jf-")
    ]
    assert mine == []


# -- the token ------------------------------------------------------------------------------------


def test_the_channel_token_never_appears_outside_its_secret(
    target: Any, host: KitHost, caplog: pytest.LogCaptureFixture
) -> None:
    emu = target.require_emulator("it shows every stored object, log, Event and request")
    caplog.set_level(logging.DEBUG)
    token = host.token
    assert token
    with running(target, host) as distributor:
        jobs = [host.submit(distributor, "env; echo $JOBFLEET_CHANNEL_TOKEN; exit 2")]
        jobs += host.submit_array(distributor, ["env"] * 3)
        for job in jobs:
            final = host.wait_report(FinalReport, job.task_instance_id)
            assert token not in final.stdout_tail
        for job in jobs:
            distributor.get_remote_exit_info(job.distributor_id)
        text = emu.all_text()
    secret_data = __import__("base64").b64encode(token.encode()).decode()
    assert token not in text.replace(secret_data, "")
    assert token not in caplog.text


# -- scaling ----------------------------------------------------------------------------------


def test_nodes_their_load_and_an_ignored_node(target: Any, host: KitHost) -> None:
    target.require_emulator("it has two known nodes")
    with running(target, host, unschedulable_timeout=0.5) as distributor:
        job = host.submit(distributor, "sleep 600", resources={"cores": 2, "memory": "1G"})
        host.wait_report(RunningReport, job.task_instance_id)
        nodes = distributor.get_nodes()
        assert set(nodes) == {"node-a", "node-b"}
        assert nodes["node-a"].cores_total == 4
        assert nodes["node-a"].requested_cores == 2
        assert nodes["node-a"].requested_memory == 1 << 30
        assert nodes["node-a"].workers == 1
        assert nodes["node-b"].workers == 0
        assert distributor.node_in_use("node-a")
        assert not distributor.node_in_use("node-b")
        distributor.ignore_node("node-a")
        blocked = host.submit(distributor, "true")
        errors = until(
            lambda: distributor.get_queueing_errors([blocked.distributor_id]),
            "the pod with nowhere to go",
        )
        assert errors[blocked.distributor_id].startswith("Unschedulable")
        distributor.unignore_node("node-a")
        later = host.submit(distributor, "true")
        assert host.wait_report(FinalReport, later.task_instance_id).error_state == "D"
