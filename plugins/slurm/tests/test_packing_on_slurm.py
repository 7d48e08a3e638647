"""Packing on a real Slurm: several members in one array element, each with its own fate."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.exit_info import ErrorState
from jobfleet.core.packing import split_member_id
from jobfleet.core.testing.host import KitHost, wait_for
from jobfleet.plugins.slurm.commands import SlurmCommands
from jobfleet.plugins.slurm.distributor import SlurmDistributor
from jobfleet.plugins.slurm.settings import SlurmSettings

MIB = 1024 * 1024
SETTINGS = SlurmSettings(poll_min=0.2, poll_max=1.0, max_queries_per_minute=6000)
HOG = shlex.join([sys.executable, "-c", "import time\nb = b'x' * (400 << 20)\ntime.sleep(60)"])


@pytest.fixture
def host(tmp_path: Path) -> Iterator[KitHost]:
    kit = KitHost(tmp_path / "kit")
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def distributor(slurm_cluster: Any, host: KitHost) -> Iterator[SlurmDistributor]:
    slurm = SlurmDistributor("pack", settings=SETTINGS, host_url=host.url, commands=SlurmCommands())
    slurm.start()
    try:
        yield slurm
    finally:
        slurm.stop()


def submit_packed(
    host: KitHost,
    distributor: SlurmDistributor,
    members: list[dict[str, Any]],
    max_tasks: int,
    array_id: int,
) -> list[tuple[int, str]]:
    """One array of `members` (add_spec keywords), packed by `max_tasks`: (tid, member id)."""
    ids = [host.add_spec(**member) for member in members]
    host.channel.put_array(array_id, 0, dict(enumerate(ids)))
    command = distributor.build_worker_node_command(array_id=array_id, batch_number=0)
    resources = {"cores": 1, "memory": "1G", "runtime": "2m", "pack": {"max_tasks": max_tasks}}
    steps = distributor.submit_array_to_batch_distributor(
        command, "pack-test", resources, len(members)
    )
    return [(tid, steps[step]) for step, tid in enumerate(ids)]


def final(host: KitHost, task_instance_id: int) -> FinalReport:
    return host.wait_report(FinalReport, task_instance_id)


def test_each_member_has_its_own_fate_and_a_host_kill_stops_only_its_member(
    distributor: SlurmDistributor, host: KitHost
) -> None:
    members = [
        {"command": "exit 3"},
        {"command": HOG, "memory": 100 * MIB},
        {"command": "sleep 600"},  # killed by the host while it runs
        {"command": "sleep 600", "runtime": 1},
        {"command": "echo one"},
        {"command": "echo two"},
    ]
    jobs = submit_packed(host, distributor, members, max_tasks=6, array_id=1)
    elements = {split_member_id(job).element for _, job in jobs}  # type: ignore[union-attr]
    assert len(elements) == 1, jobs  # all six in one element, one after another

    doomed_tid, doomed = jobs[2]
    host.wait_report(RunningReport, doomed_tid)
    distributor.terminate_task_instances([doomed])
    # terminate_task_instances returns once the member is stopped and reported.
    killed = host.reports(FinalReport, doomed_tid)
    assert [r.error_state for r in killed] == [ErrorState.KILL_SELF], killed
    assert distributor.get_submitted_or_running([doomed]) == set()

    states = [final(host, tid).error_state for tid, _ in jobs]
    assert states == ["E", "Z", "K", "Z", "D", "D"]
    reasons = [final(host, tid).exit.reason.value for tid, _ in jobs[1:4:2]]  # type: ignore[union-attr]
    assert reasons == ["oom", "timeout"]
    # Each reported under its own id, so the host records (and later kills) the member only.
    running = {tid: host.reports(RunningReport, tid)[0].distributor_id for tid, _ in jobs}
    assert running == dict(jobs)
    assert all(len(host.reports(FinalReport, tid)) == 1 for tid, _ in jobs)


def test_a_member_killed_before_it_starts_is_skipped_and_the_next_runs(
    distributor: SlurmDistributor, host: KitHost
) -> None:
    gate = host.root / "gate"
    members = [
        {"command": f"while ! test -e {shlex.quote(str(gate))}; do sleep 0.1; done"},
        {"command": "echo never"},
        {"command": "echo after"},
    ]
    jobs = submit_packed(host, distributor, members, max_tasks=3, array_id=2)
    host.wait_report(RunningReport, jobs[0][0])
    distributor.terminate_task_instances([jobs[1][1]])  # queued behind the first: no wait
    gate.touch()
    assert final(host, jobs[2][0]).error_state == ErrorState.DONE
    assert final(host, jobs[0][0]).error_state == ErrorState.DONE
    assert host.reports(RunningReport, jobs[1][0]) == []
    assert host.reports(FinalReport, jobs[1][0]) == []


def test_a_cancelled_element_leaves_its_later_members_unknown_not_blamed(
    distributor: SlurmDistributor, host: KitHost
) -> None:
    members = [{"command": "echo first"}, {"command": "sleep 600"}, {"command": "echo later"}]
    jobs = submit_packed(host, distributor, members, max_tasks=3, array_id=3)
    host.wait_report(RunningReport, jobs[1][0])
    element = split_member_id(jobs[1][1]).element  # type: ignore[union-attr]
    # Someone else cancels the whole job: the running member is stopped and reported.
    distributor.commands.run(["scancel", element])
    assert final(host, jobs[1][0]).error_state == ErrorState.KILL_SELF
    assert final(host, jobs[0][0]).error_state == ErrorState.DONE
    later = jobs[2][1]
    wait_for(lambda: not distributor.get_submitted_or_running([later]), "the element to end")
    info = wait_for(
        lambda: (i := distributor.get_remote_exit_info(later)).finalized and i,
        "the element's accounting",
    )
    assert info.error_state == ErrorState.UNKNOWN_ERROR, info
    assert "never started" in info.error_message
    assert host.reports(RunningReport, jobs[2][0]) == []


def test_jobfleet_run_packed_retries_each_member_on_its_own(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    """Through `jobfleet run --pack`: a member that fails once and one over its runtime are
    retried (the latter with 1.5x the runtime); the others finish in their first attempt."""
    import json
    import os
    import shutil
    import sqlite3
    import subprocess

    marker = tmp_path / "failed-once"
    fails_once = f"test -e {marker} || {{ touch {marker}; exit 3; }}"
    tasks = [
        {"name": "fails-once", "command": fails_once},
        {"name": "slow", "command": "sleep 2.5", "resources": {"runtime": 2}},
        *({"name": f"quick-{n}", "command": f"echo {n}"} for n in range(6)),
    ]
    (tmp_path / "tasks.json").write_text(json.dumps({"tasks": tasks}))
    program = shutil.which("jobfleet")
    assert program
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(JOBFLEET_SLURM_POLL_MIN="0.2", JOBFLEET_SLURM_POLL_MAX="1")
    environ["JOBFLEET_LEDGER"] = str(tmp_path / "ledger.db")
    argv = [program, "run", "--cluster", "slurm", "--json", "--runtime", "2", "tasks.json"]
    result = subprocess.run(
        [*argv, "--pack", "max_tasks=4,max_runtime=10m"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        rows = connection.execute(
            "SELECT tasks.name, task_instances.state, task_instances.distributor_id, "
            "task_instances.requested_resources FROM task_instances JOIN tasks "
            "ON tasks.id = task_instances.task_id ORDER BY task_instances.id"
        ).fetchall()
    attempts: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for name, state, job, resources in rows:
        attempts.setdefault(name, []).append((state, job, json.loads(resources)))
    assert [a[0] for a in attempts["fails-once"]] == ["E", "D"], attempts
    assert [a[0] for a in attempts["slow"]] == ["Z", "D"], attempts
    assert [a[2]["runtime"] for a in attempts["slow"]] == [2, 3]
    for n in range(6):
        assert [a[0] for a in attempts[f"quick-{n}"]] == ["D"]
    # The first attempts ran packed: 8 members, 4 per element.
    first = [runs[0][1] for runs in attempts.values()]
    elements = {split_member_id(job).element for job in first}  # type: ignore[union-attr]
    assert len(elements) == 2, first
