"""`jobfleet run --cluster mesos` end to end: the host, the http channel, the loopback master;
and a host SIGKILLed mid-run, then `jobfleet run --resume`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.testing.host import wait_for

JOBFLEET = shutil.which("jobfleet")
WORKER = str(Path(sys.executable).with_name("jobfleet-worker-node"))
EXECUTOR = f"{sys.executable} -m jobfleet.plugins.mesos.executor"


def environment(mc: Any, tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(
        JOBFLEET_MESOS_MASTER=mc.master,
        JOBFLEET_MESOS_EXECUTOR_COMMAND=EXECUTOR,
        JOBFLEET_MESOS_WORKER_COMMAND=WORKER,
        JOBFLEET_MESOS_KILL_GRACE="2",
        JOBFLEET_MESOS_REFUSE_SECONDS="1",
        JOBFLEET_MESOS_FAILOVER_TIMEOUT="300",
        JOBFLEET_LEDGER=str(tmp_path / "ledger.db"),
        TMPDIR=str(tmp_path),
    )
    return environ


def jobfleet(mc: Any, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert JOBFLEET, "the jobfleet console script is not installed in this environment"
    return subprocess.run(
        [JOBFLEET, "run", *args, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment(mc, cwd),
        check=False,
        timeout=600,
    )


@pytest.mark.slow
def test_50_tasks_run_end_to_end_over_the_http_channel(mesos_cluster: Any, tmp_path: Path) -> None:
    mc = mesos_cluster
    tasks = {
        "defaults": {"resources": {"cores": 0.25, "memory": "100M", "runtime": "5m"}},
        "tasks": [{"name": f"t{n}", "command": f"echo task {n}"} for n in range(50)],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    result = jobfleet(mc, tmp_path, "--cluster", "mesos", "tasks.json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "done"
    assert {task["task_state"] for task in summary["tasks"]} == {"done"}
    assert len(summary["tasks"]) == 50
    assert mc.call_count("TEARDOWN") == 1  # stop() at the end of the run
    assert not mc.frameworks()
    assert not [t for t in mc.tasks() if t["state"] not in ("TASK_FINISHED",)]
    assert mc.call_count("ACCEPT") < 50  # packed: several tasks per offer
    token = (next(tmp_path.glob("runs/run-*/channel/http-token"))).read_text().strip()
    assert token not in mc.all_text()
    assert token not in result.stderr


@pytest.mark.slow
def test_host_killed_and_resumed_loses_nothing_and_runs_nothing_twice(
    mesos_cluster: Any, tmp_path: Path
) -> None:
    mc = mesos_cluster
    done = tmp_path / "done"
    done.mkdir()
    tasks = {
        "defaults": {"resources": {"cores": 0.5, "memory": "100M", "runtime": "5m"}},
        "tasks": [
            {"name": f"t{n}", "command": f"sleep {1 + n % 3}; echo ran >> {done}/t{n}"}
            for n in range(12)
        ],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    assert JOBFLEET
    log = open(tmp_path / "service.log", "ab")  # noqa: SIM115 - closed below
    host = subprocess.Popen(
        [JOBFLEET, "run", "--cluster", "mesos", "tasks.json", "--json"],
        cwd=tmp_path,
        env=environment(mc, tmp_path),
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(lambda: len(mc.tasks()) >= 4, "tasks launched", 60)
        framework = next(iter(mc.frameworks()))
        host.send_signal(signal.SIGKILL)
        host.wait()
    finally:
        log.close()
    assert mc.frameworks()[framework]  # kept for its failover timeout
    mc.reset_counts()
    time.sleep(1)
    resumed = subprocess.Popen(
        [JOBFLEET, "run", "--resume", "1", "--json"],
        cwd=tmp_path,
        env=environment(mc, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The same framework, connected again (no second framework).
    wait_for(lambda: mc.frameworks().get(framework, {}).get("connected"), "the re-subscription")
    assert list(mc.frameworks()) == [framework]
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert {task["task_state"] for task in summary["tasks"]} == {"done"}
    assert mc.call_count("RECONCILE") >= 1
    ran = {p.name: p.read_text().count("ran") for p in done.iterdir()}
    assert ran == {f"t{n}": 1 for n in range(12)}, ran


def cli(mc: Any, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert JOBFLEET
    return subprocess.run(
        [JOBFLEET, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment(mc, cwd),
        check=False,
        timeout=60,
    )


@pytest.mark.slow
def test_agent_lost_mid_task_is_unknown_and_the_host_retries_it_elsewhere(
    mesos_cluster: Any, tmp_path: Path
) -> None:
    """The agent running a long task is removed: that attempt ends U, the host starts another,
    which the other agent runs, and the run ends done."""
    mc = mesos_cluster
    tasks = {
        "defaults": {"resources": {"cores": 1, "memory": "100M", "runtime": "5m"}},
        "tasks": [{"name": "long", "command": "sleep 3; echo finished"}],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    assert JOBFLEET
    host = subprocess.Popen(
        [JOBFLEET, "run", "--cluster", "mesos", "tasks.json", "--json"],
        cwd=tmp_path,
        env=environment(mc, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = wait_for(
            lambda: [t for t in mc.tasks() if t["state"] == "TASK_RUNNING"], "a running task", 60
        )[0]
        time.sleep(0.5)  # the wrapper is under way
        mc.remove_agent(first["agent_id"])
        out, err = host.communicate(timeout=300)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["status"] == "done"
    (task,) = summary["tasks"]
    assert (task["name"], task["task_state"], task["attempts"]) == ("long", "done", 2), task
    # At the master: the first task lost with its agent, the retry finished on the other one.
    states = {t["task_id"]: (t["state"], t["agent_id"]) for t in mc.tasks()}
    assert len(states) == 2, states
    lost = states.pop(first["task_id"])
    assert lost == ("TASK_LOST", first["agent_id"])
    ((state, agent),) = states.values()
    assert state == "TASK_FINISHED"
    assert agent != first["agent_id"]
    # What the ledger says: U, then a second attempt done.
    status = cli(mc, tmp_path, "status", "1", "--all", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    shown = json.loads(status.stdout)
    assert shown["run"]["status"] == "done", shown
    events = cli(mc, tmp_path, "events", "1")
    assert events.returncode == 0, events.stderr[-2000:]
    assert "→ U" in events.stdout, events.stdout
    assert "agent" in events.stdout.lower()
