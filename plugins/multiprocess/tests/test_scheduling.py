"""Scheduling of the multiprocess backend beyond the kit: bounded starvation, refusals."""

from pathlib import Path

import pytest

from jobfleet.core.channel import EventKind, FinalReport, RunningReport
from jobfleet.core.errors import ResourceError
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.testing import KitHost
from jobfleet.core.testing.host import wait_for
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings


@pytest.fixture
def host(tmp_path):
    kit_host = KitHost(tmp_path)
    yield kit_host
    kit_host.close()


def started_distributor(host, **settings):
    distributor = MultiprocessDistributor(
        "test", host_url=host.url, settings=MultiprocessSettings(**settings)
    )
    distributor.start()
    return distributor


def waits_for(release: Path) -> str:
    return f"while [ ! -e {release} ]; do sleep 0.05; done"


def started_at(host, job) -> float:
    """When the instance's wrapper said it was running (the writer's clock)."""
    return next(
        event.time
        for event in host.history()
        if event.kind is EventKind.RUNNING and event.task_instance_id == job.task_instance_id
    )


def still_queued(distributor, distributor_id) -> bool:
    return distributor.get_remote_exit_info(distributor_id).error_message == "still queued"


def test_a_large_task_is_overtaken_at_most_overtake_limit_times(host, tmp_path):
    distributor = started_distributor(host, cores=2, overtake_limit=2, kill_grace=1)
    try:
        release = tmp_path / "release"
        holder = host.submit(distributor, waits_for(release), resources={"cores": 1})
        host.wait_report(RunningReport, holder.task_instance_id)
        large = host.submit(distributor, "true", resources={"cores": 2})
        small = [host.submit(distributor, "true", resources={"cores": 1}) for _ in range(4)]
        # The first two small tasks overtake the large one, one after the other...
        for job in small[:2]:
            host.wait_report(FinalReport, job.task_instance_id)
        wait_for(
            lambda: not distributor.get_submitted_or_running([small[1].distributor_id]),
            "the second small task to be finished",
        )
        # ...then the large one has priority: free cores wait for it, nobody else starts.
        assert still_queued(distributor, large.distributor_id)
        assert all(still_queued(distributor, job.distributor_id) for job in small[2:])
        release.touch()
        for job in [large, *small[2:]]:
            assert host.wait_report(FinalReport, job.task_instance_id).error_state == "D"
        assert started_at(host, large) < started_at(host, small[2])
        assert started_at(host, large) < started_at(host, small[3])
    finally:
        distributor.stop()


def test_without_overtaking_the_queue_is_first_come_first_served(host, tmp_path):
    distributor = started_distributor(host, cores=2, overtake_limit=0, kill_grace=1)
    try:
        release = tmp_path / "release"
        holder = host.submit(distributor, waits_for(release), resources={"cores": 1})
        host.wait_report(RunningReport, holder.task_instance_id)
        large = host.submit(distributor, "true", resources={"cores": 2})
        small = host.submit(distributor, "true", resources={"cores": 1})
        assert still_queued(distributor, small.distributor_id)
        release.touch()
        host.wait_report(FinalReport, small.task_instance_id)
        host.wait_report(FinalReport, large.task_instance_id)
        assert started_at(host, large) < started_at(host, small)
    finally:
        distributor.stop()


@pytest.mark.parametrize(
    ("resources", "field"),
    [({"cores": 3}, "cores"), ({"memory": "2G"}, "memory"), ({"gpus": 1}, "gpus")],
)
def test_a_request_that_can_never_fit_is_refused_at_submission(host, resources, field):
    distributor = started_distributor(host, cores=2, memory="1G")
    try:
        with pytest.raises(ResourceError) as caught:
            host.submit(distributor, "true", resources=resources)
        assert caught.value.field == field
    finally:
        distributor.stop()


def test_gpus_are_handed_out_as_cuda_visible_devices(host):
    distributor = started_distributor(host, cores=4, gpus="0,1,2")
    try:
        two = host.submit(distributor, 'echo "$CUDA_VISIBLE_DEVICES"', resources={"gpus": 2})
        none = host.submit(distributor, 'echo "[$CUDA_VISIBLE_DEVICES]"', resources={})
        devices = host.wait_report(FinalReport, two.task_instance_id).stdout_tail.strip().split(",")
        assert len(devices) == 2
        assert set(devices) <= {"0", "1", "2"}
        assert host.wait_report(FinalReport, none.task_instance_id).stdout_tail == "[]\n"
    finally:
        distributor.stop()


def test_exit_info_of_a_finished_wrapper_comes_from_its_exit_code(host):
    distributor = started_distributor(host, cores=2)
    try:
        job = host.submit(distributor, "exit 3")
        host.wait_report(FinalReport, job.task_instance_id)
        wait_for(lambda: not distributor.get_submitted_or_running([job.distributor_id]), "the end")
        info = distributor.get_remote_exit_info(job.distributor_id)
        assert info.error_state is ErrorState.ERROR_RECOVERABLE
        assert info.record.exit_code == 3
    finally:
        distributor.stop()


def test_stop_removes_the_work_directory(host):
    distributor = started_distributor(host, cores=1)
    workdir = distributor._workdir
    assert workdir is not None
    assert workdir.exists()
    distributor.stop()
    assert not workdir.exists()
    distributor.stop()


def test_ended_instances_answer_from_a_packed_record_again_and_again(host, tmp_path):
    release = tmp_path / "release"
    distributor = started_distributor(host, cores=1)
    try:
        jobs = host.submit_array(distributor, ["exit 0", "exit 1", "exit 2"])
        blocker = host.submit(distributor, waits_for(release))
        queued = host.submit(distributor, "true")
        wait_for(lambda: still_queued(distributor, queued.distributor_id), "a queued instance")
        distributor.terminate_task_instances([queued.distributor_id])
        release.touch()
        ids = [job.distributor_id for job in [*jobs, blocker, queued]]
        wait_for(lambda: not distributor.get_submitted_or_running(ids), "the end")
        # Nothing of an ended instance is kept but its record: the host's memory stays flat.
        assert distributor._jobs == {}
        for _ in range(2):  # asked again, the same answer
            for step, job in enumerate(jobs):
                info = distributor.get_remote_exit_info(job.distributor_id)
                assert info.finalized
                assert (info.record.exit_code if info.record else 0) == step
            killed = distributor.get_remote_exit_info(queued.distributor_id)
            assert killed.error_state is ErrorState.KILL_SELF
            assert killed.finalized
        prefix = jobs[0].distributor_id.rpartition("-")[0]
        never = distributor.get_remote_exit_info(f"{prefix}-999999")
        assert "never ran" in never.error_message
    finally:
        distributor.stop()
