"""`jobfleet status`, `logs`, `usage`, `events` and `queues`, run as real processes.

Each test fills a SQLite ledger in tmp_path through the ledger API, then runs the installed
`jobfleet` console script against it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobfleet.core.exit_info import ExitReason, ExitRecord
from jobfleet.core.host.ledger import (
    Array,
    Cluster,
    Ledger,
    Queue,
    Run,
    Task,
    TaskInstance,
    add_instance,
    record_event,
    transition,
    utcnow,
)
from jobfleet.core.resources import MIB

JOBFLEET = shutil.which("jobfleet")
# Bytes that are not UTF-8, a NUL and no final newline: `logs` must copy them untouched.
STDOUT_BYTES = b"first line\n\xff\xfe invalid utf-8 \x80\n\x00binary\nlast line without newline"
STDERR_BYTES = b"warning: something\nerror: \xc3\x28 bad\n"
OWNER = "node-a:123"


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}


def jobfleet(*args: str) -> subprocess.CompletedProcess[str]:
    assert JOBFLEET, "the jobfleet console script is not installed in this environment"
    return subprocess.run(
        [JOBFLEET, *args],
        capture_output=True,
        text=True,
        env=environment(),
        check=False,
        timeout=120,
    )


def jobfleet_bytes(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert JOBFLEET, "the jobfleet console script is not installed in this environment"
    return subprocess.run(
        [JOBFLEET, *args], capture_output=True, env=environment(), check=False, timeout=120
    )


@dataclass
class Filled:
    """A ledger with two runs, and the ids the tests look for."""

    path: Path
    demo: int
    live: int
    alpha_z: int
    alpha_d: int
    beta: int
    gamma: int
    queued: int
    stdout: Path
    stderr: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return jobfleet(*args, "--ledger", str(self.path))

    def run_bytes(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return jobfleet_bytes(*args, "--ledger", str(self.path))


def _attempt(session: Session, task: Task, path: str, memory: str, **values: Any) -> TaskInstance:
    instance = add_instance(session, task, {"memory": memory, "cores": 1, "queue": "all"})
    for letter in path:
        transition(session, instance, letter, f"now {letter}")
    for key, value in values.items():
        setattr(instance, key, value)
    session.flush()
    return instance


def _task(session: Session, run: Run, name: str, state: str) -> Task:
    task = Task(run_id=run.id, name=name, command="true", resources={}, max_attempts=3, state=state)
    session.add(task)
    session.flush()
    return task


@pytest.fixture
def filled(tmp_path: Path) -> Filled:
    stdout, stderr = tmp_path / "alpha.out", tmp_path / "alpha.err"
    stdout.write_bytes(STDOUT_BYTES)
    stderr.write_bytes(STDERR_BYTES)
    path = tmp_path / "ledger.db"
    now = utcnow()
    with Ledger.open(path) as ledger, ledger.session() as session:
        cluster = Cluster(name="dummy", cluster_type="dummy")
        session.add(cluster)
        session.flush()
        demo = Run(
            name="demo",
            cluster_id=cluster.id,
            status="failed",
            created_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=1),
        )
        live = Run(
            name="live",
            cluster_id=cluster.id,
            status="running",
            created_at=now - timedelta(minutes=5),
            owner_token=OWNER,
            lease_expires_at=now + timedelta(minutes=10),
        )
        session.add_all([demo, live])
        session.flush()
        alpha = _task(session, demo, "alpha", "done")
        oom = ExitRecord(ExitReason.OOM, signal=9).to_dict()
        alpha_z = _attempt(session, alpha, "IORZ", "100M", maxrss=100 * MIB, exit_record=oom)
        record_event(
            session,
            demo.id,
            "adjustment",
            "memory scaled from 100M to 150M after running out of memory",
            details={"from": {"memory": "100M"}, "to": {"memory": "150M"}, "adjustments": []},
        )
        alpha_d = _attempt(
            session,
            alpha,
            "IORD",
            "150M",
            maxrss=120 * MIB,
            cpu=3.5,
            wallclock=4.25,
            hostname="node1",
            stdout_path=str(stdout),
            stderr_path=str(stderr),
            exit_record=ExitRecord(ExitReason.COMPLETED, exit_code=0).to_dict(),
        )
        beta = _task(session, demo, "beta", "done")
        beta_d = _attempt(session, beta, "IORD", "1G", maxrss=10 * MIB, cpu=1.0, wallclock=90.0)
        gamma = _task(session, demo, "gamma", "failed")
        failed = ExitRecord(ExitReason.FAILED, exit_code=2).to_dict()
        gamma_e = _attempt(
            session,
            gamma,
            "IORE",
            "100M",
            maxrss=95 * MIB,
            cpu=0.5,
            stdout_path=str(tmp_path / "deleted.out"),
            exit_record=failed,
        )
        waiting = _task(session, live, "waiting", "pending")
        queued = _attempt(session, waiting, "", "2G")
        return Filled(
            path=path,
            demo=demo.id,
            live=live.id,
            alpha_z=alpha_z.id,
            alpha_d=alpha_d.id,
            beta=beta_d.id,
            gamma=gamma_e.id,
            queued=queued.id,
            stdout=stdout,
            stderr=stderr,
        )


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in output.splitlines():
        parts = [part.strip() for part in line.split("│")[1:-1]]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no table row starting with {first!r} in:\n{output}")


def ok(result: subprocess.CompletedProcess[Any]) -> subprocess.CompletedProcess[Any]:
    assert result.returncode == 0, result.stderr
    return result


# --- status ---------------------------------------------------------------------------------


def test_status_lists_the_runs(filled: Filled) -> None:
    out = ok(filled.run("status")).stdout
    demo = cells(out, str(filled.demo))
    assert demo[1:9] == ["demo", "dummy", "failed", "2", "1", "0", "0", "3"]
    live = cells(out, str(filled.live))
    assert live[1:9] == ["live", "dummy", "running", "0", "0", "0", "1", "1"]
    assert f"{OWNER} (active)" in live[-1]
    assert out.index("live") < out.index("demo")  # newest first

    data = json.loads(ok(filled.run("status", "--json")).stdout)
    runs = {run["name"]: run for run in data["runs"]}
    assert runs["demo"]["tasks_failed"] == 1
    assert runs["live"]["owner_active"] is True
    assert runs["demo"]["finished_at"].endswith("+00:00")

    first = ok(filled.run("status", "--limit", "1")).stdout
    assert "… 1 older runs: use --all" in first
    assert "demo" not in first


def test_status_of_a_run_shows_counts_and_latest_attempts(filled: Filled) -> None:
    out = ok(filled.run("status", "demo")).stdout
    assert f"Run {filled.demo} 'demo' on dummy: failed" in out
    assert "instances: D done 2, E error recoverable 1, Z resource error 1" in out
    assert "tasks: done 2, failed 1 (of 3)" in out
    alpha = cells(out, "alpha")
    assert alpha[1:] == ["done", f"{filled.alpha_d} D", "2", "completed", "4.2s", "120M", "3.5s"]
    beta = cells(out, "beta")
    assert beta[3:] == ["1", "-", "1m30s", "10M", "1.0s"]
    gamma = cells(out, "gamma")
    assert gamma[1:5] == ["failed", f"{filled.gamma} E", "1", "failed"]
    assert "more tasks" not in out


def test_status_of_a_run_by_id_as_json(filled: Filled) -> None:
    data = json.loads(ok(filled.run("status", str(filled.demo), "--json")).stdout)
    assert set(data) >= {"run", "state_counts", "task_counts", "tasks"}
    assert data["run"]["id"] == filled.demo
    assert data["run"]["name"] == "demo"
    assert data["state_counts"] == {"D": 2, "E": 1, "Z": 1}
    assert data["task_counts"] == {"done": 2, "failed": 1}
    tasks = {task["name"]: task for task in data["tasks"]}
    assert tasks["alpha"]["instance_id"] == filled.alpha_d
    assert tasks["alpha"]["attempts"] == 2
    assert tasks["alpha"]["maxrss"] == 120 * MIB
    assert tasks["alpha"]["requested_memory"] == 150 * MIB
    assert tasks["gamma"]["exit_reason"] == "failed"


def test_status_cuts_the_task_list(filled: Filled) -> None:
    out = ok(filled.run("status", "demo", "--limit", "1")).stdout
    assert "alpha" in out
    assert "beta" not in out
    assert "… 2 more tasks: use --all" in out
    everything = ok(filled.run("status", "demo", "--limit", "1", "--all")).stdout
    assert "gamma" in everything
    assert "more tasks" not in everything
    data = json.loads(ok(filled.run("status", "demo", "--limit", "2", "--json")).stdout)
    assert [task["name"] for task in data["tasks"]] == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [("999", "There is no run 999 in the ledger at sqlite:///"), ("nope", "no run named 'nope'")],
)
def test_unknown_run_is_an_error(filled: Filled, ref: str, message: str) -> None:
    for command in ("status", "usage", "events"):
        result = filled.run(command, ref)
        assert result.returncode == 1, (command, result.stdout)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_ambiguous_run_name_asks_for_an_id(filled: Filled) -> None:
    with Ledger.open(filled.path) as ledger, ledger.session() as session:
        second = Run(name="demo", cluster_id=session.scalars(select(Cluster.id)).one())
        session.add(second)
        session.flush()
        second_id = second.id
    result = filled.run("status", "demo")
    assert result.returncode == 1
    assert f"2 runs are named 'demo': use an id: {filled.demo}, {second_id}" in result.stderr


def test_a_missing_ledger_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    result = jobfleet("status", "--ledger", str(path))
    assert result.returncode == 1
    assert f"There is no ledger at {path}" in result.stderr
    assert not path.exists()


def as_a_user_who_may_only_read() -> list[str]:
    """The argv prefix that makes file permissions bind: none for a normal user; for root,
    `setpriv` without the capabilities that override them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv or "setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if setpriv is None or subprocess.run([*prefix, "true"], check=False).returncode != 0:
        pytest.skip("as root, only setpriv (dropping CAP_DAC_OVERRIDE) makes a file read-only")
    return prefix


def test_a_read_only_ledger_can_be_looked_into(
    filled: Filled, tmp_path: Path, in_process: InProcess
) -> None:
    # What SQLAlchemy's reader shows of the writable original, for the stdlib's to match.
    slow = {
        args: in_process.run("status", *args, "--ledger", str(filled.path), quick=False)[1]
        for args in (("demo",), ("--json",), ("demo", "--json"))
    }
    shelf = tmp_path / "read-only"
    shelf.mkdir()
    path = shelf / "ledger.db"
    shutil.copyfile(filled.path, path)
    before = path.read_bytes()
    path.chmod(0o444)
    shelf.chmod(0o555)  # not even a -shm file can be made beside it
    prefix = as_a_user_who_may_only_read()
    assert JOBFLEET

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, JOBFLEET, *args, "--ledger", str(path)], capture_output=True, text=True,
            errors="replace", env=environment(), check=False, timeout=120,
        )  # fmt: skip

    try:
        assert "demo" in ok(run("status")).stdout
        assert json.loads(ok(run("status", "demo", "--json")).stdout)["run"]["name"] == "demo"
        for args, shown in slow.items():
            assert ok(run("status", *args)).stdout == shown
        assert "alpha" in ok(run("usage", "demo")).stdout
        assert "attempt 1 queued" in ok(run("events", "demo")).stdout
        assert ok(run("logs", str(filled.alpha_d))).stdout.startswith("first line")
        assert json.loads(ok(run("queues", "list", "--json")).stdout) == []
        refused = run("queues", "add", "dummy", "short")  # a command that writes
        assert refused.returncode == 1
        assert "could not be opened" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        shelf.chmod(0o755)
        path.chmod(0o644)
    assert path.read_bytes() == before
    assert [p.name for p in shelf.iterdir()] == ["ledger.db"]


# --- logs -----------------------------------------------------------------------------------


def test_logs_print_the_file_byte_for_byte(filled: Filled) -> None:
    result = ok(filled.run_bytes("logs", str(filled.alpha_d)))
    assert result.stdout == STDOUT_BYTES
    errors = ok(filled.run_bytes("logs", str(filled.alpha_d), "--stderr"))
    assert errors.stdout == STDERR_BYTES


def test_logs_tail(filled: Filled) -> None:
    last_two = ok(filled.run_bytes("logs", str(filled.alpha_d), "--tail", "2")).stdout
    assert last_two == b"\x00binary\nlast line without newline"
    # A final newline ends the last line; it does not make an empty one.
    one = ok(filled.run_bytes("logs", str(filled.alpha_d), "--stderr", "--tail", "1")).stdout
    assert one == b"error: \xc3\x28 bad\n"
    everything = ok(filled.run_bytes("logs", str(filled.alpha_d), "--tail", "100")).stdout
    assert everything == STDOUT_BYTES
    assert ok(filled.run_bytes("logs", str(filled.alpha_d), "--tail", "0")).stdout == b""


def test_logs_of_a_big_file_are_complete(filled: Filled) -> None:
    big = bytes(range(256)) * 4096 + b"\n" + b"x" * 200_000  # over a megabyte, several chunks
    filled.stdout.write_bytes(big)
    assert ok(filled.run_bytes("logs", str(filled.alpha_d))).stdout == big
    assert ok(filled.run_bytes("logs", str(filled.alpha_d), "--tail", "1")).stdout == (
        b"x" * 200_000
    )


def test_logs_as_json(filled: Filled) -> None:
    data = json.loads(ok(filled.run("logs", str(filled.alpha_d), "--json")).stdout)
    assert data["instance_id"] == filled.alpha_d
    assert data["run_id"] == filled.demo
    assert (data["stream"], data["path"]) == ("stdout", str(filled.stdout))
    assert data["bytes"] == len(STDOUT_BYTES)
    assert data["utf8"] is False  # STDOUT_BYTES holds bytes that are not UTF-8: kept in base64
    assert base64.b64decode(data["base64"]) == STDOUT_BYTES
    assert data["text"] == STDOUT_BYTES.decode("utf-8", "replace")
    tail = json.loads(ok(filled.run("logs", str(filled.alpha_d), "--stderr", "--tail", "1",
                                    "--json")).stdout)  # fmt: skip
    assert tail["stream"] == "stderr"
    assert tail["bytes"] == len(b"error: \xc3\x28 bad\n")
    filled.stdout.write_bytes("caf\u00e9 ok\n".encode())
    plain = json.loads(ok(filled.run("logs", str(filled.alpha_d), "--json")).stdout)
    assert (plain["text"], plain["utf8"], "base64" in plain) == ("caf\u00e9 ok\n", True, False)


def test_logs_of_an_instance_not_started(filled: Filled) -> None:
    result = filled.run("logs", str(filled.queued))
    assert result.returncode == 1
    assert f"Task instance {filled.queued} has no stdout file recorded yet" in result.stderr
    assert "Q (QUEUED)" in result.stderr
    assert "not started" in result.stderr
    assert "Traceback" not in result.stderr


def test_logs_of_a_file_that_is_gone(filled: Filled, tmp_path: Path) -> None:
    result = filled.run("logs", str(filled.gamma))
    assert result.returncode == 1
    assert str(tmp_path / "deleted.out") in result.stderr
    assert "does not exist" in result.stderr
    no_stderr = filled.run("logs", str(filled.gamma), "--stderr")
    assert no_stderr.returncode == 1
    assert "has no stderr file" in no_stderr.stderr


def test_logs_of_an_unknown_instance(filled: Filled) -> None:
    result = filled.run("logs", "98765")
    assert result.returncode == 1
    assert "There is no task instance 98765" in result.stderr


# --- usage ----------------------------------------------------------------------------------


def test_usage_table_flags_and_footer(filled: Filled) -> None:
    out = ok(filled.run("usage", "demo")).stdout
    alpha = cells(out, "alpha")
    assert alpha == [
        "alpha", "2/2", "150M", "120M", "80%", "3.5s", "4.2s", "100M → 150M", "resource-retried",
    ]  # fmt: skip
    beta = cells(out, "beta")
    assert (beta[2], beta[3], beta[-1]) == ("1G", "10M", "over-requested")
    gamma = cells(out, "gamma")
    assert (gamma[4], gamma[-1]) == ("95%", "near limit")
    assert "3 tasks; total cpu 5.0s; peak maxrss 120M (alpha)" in out


def test_usage_json(filled: Filled) -> None:
    data = json.loads(ok(filled.run("usage", str(filled.demo), "--json")).stdout)
    rows = {row["name"]: row for row in data["tasks"]}
    assert rows["alpha"]["memory_by_attempt"] == ["100M", "150M"]
    assert rows["alpha"]["flag"] == "resource-retried"
    assert rows["alpha"]["instance_id"] == filled.alpha_d
    assert rows["beta"]["flag"] == "over-requested"
    assert rows["beta"]["requested_memory"] == 1024 * MIB
    assert rows["gamma"]["flag"] == "near limit"
    assert data["total_cpu"] == 5.0
    assert data["peak_maxrss"] == 120 * MIB


def test_usage_of_a_run_without_usage(filled: Filled) -> None:
    out = ok(filled.run("usage", "live")).stdout
    assert f"No task of run {filled.live} (live) has reported usage yet." in out


# --- events ---------------------------------------------------------------------------------


def test_events_one_line_each(filled: Filled) -> None:
    lines = ok(filled.run("events", "demo")).stdout.splitlines()
    # alpha: 1 + 4 + 1 + 4 transitions, the adjustment; beta and gamma: 5 each.
    assert len(lines) == 21
    assert f"instance {filled.alpha_z} (alpha #1)  → Q  attempt 1 queued" in lines[0]
    assert lines[4].endswith(f"instance {filled.alpha_z} (alpha #1)  R → Z  now Z")
    assert "run  adjustment  memory scaled from 100M to 150M" in lines[5]
    assert not any("waiting" in line for line in lines)  # the other run's


def test_events_of_one_instance_as_json_lines(filled: Filled) -> None:
    out = ok(filled.run("events", "demo", "--instance", str(filled.gamma), "--json")).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(row["from_state"], row["to_state"]) for row in rows] == [
        (None, "Q"), ("Q", "I"), ("I", "O"), ("O", "R"), ("R", "E"),
    ]  # fmt: skip
    assert {row["instance_id"] for row in rows} == {filled.gamma}
    assert {row["task_name"] for row in rows} == {"gamma"}
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)

    wrong = filled.run("events", "demo", "--instance", str(filled.queued))
    assert wrong.returncode == 1
    assert f"belongs to run {filled.live}" in wrong.stderr


def test_events_follow_ends_when_the_run_is_over(filled: Filled) -> None:
    # demo is failed already: --follow prints everything, then stops by itself.
    followed = ok(filled.run("events", "demo", "--follow"))
    assert followed.stdout == ok(filled.run("events", "demo")).stdout


def _follow(filled: Filled) -> subprocess.Popen[str]:
    assert JOBFLEET
    command = [JOBFLEET, "events", "live", "--follow", "--json", "--ledger", str(filled.path)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(), text=True
    )


@contextmanager
def killed_after(process: subprocess.Popen[str], seconds: float) -> Iterator[None]:
    """Kill the process if the block has not finished in time: a hang becomes a failure."""
    timer = threading.Timer(seconds, process.kill)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_events_follow_streams_until_the_run_ends(filled: Filled) -> None:
    with _follow(filled) as follower, killed_after(follower, 60):
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # waits for the existing event
        assert (first["instance_id"], first["to_state"]) == (filled.queued, "Q")
        with Ledger.open(filled.path) as ledger, ledger.session() as session:
            instance = session.get_one(TaskInstance, filled.queued)
            transition(session, instance, "K", "killed by the user")
            run = session.get_one(Run, filled.live)
            run.status = "killed"
        rest = [json.loads(line) for line in follower.stdout]
        assert follower.wait() == 0
    assert [(row["from_state"], row["to_state"], row["message"]) for row in rest] == [
        ("Q", "K", "killed by the user")
    ]


def test_events_follow_stops_quietly_on_ctrl_c(filled: Filled) -> None:
    with _follow(filled) as follower, killed_after(follower, 60):
        assert follower.stdout is not None
        assert follower.stderr is not None
        json.loads(follower.stdout.readline())  # it is following now
        follower.send_signal(signal.SIGINT)
        assert follower.wait() == 0
        assert follower.stdout.read() == ""
        assert follower.stderr.read() == ""


# --- queues ---------------------------------------------------------------------------------


def test_queues_add_list_remove(tmp_path: Path) -> None:
    ledger = str(tmp_path / "queues.db")
    added = ok(
        jobfleet(
            "queues", "add", "dummy", "short", "--ledger", ledger,
            "--max-memory", "64G", "--max-runtime", "2h", "--max-cores", "8",
            "--default-memory", "1536M", "--param", "account=lab", "--param", "priority=5",
        )
    )  # fmt: skip
    assert "Added the queue 'short' of cluster 'dummy' (new cluster of type dummy)" in added.stdout
    ok(jobfleet("queues", "add", "dummy", "long", "--ledger", ledger, "--max-runtime", "7d"))

    listed = json.loads(ok(jobfleet("queues", "list", "--json", "--ledger", ledger)).stdout)
    assert listed == [
        {"cluster": "dummy", "cluster_type": "dummy", "queue": "long",
         "parameters": {"max_runtime": 7 * 86400}},
        {"cluster": "dummy", "cluster_type": "dummy", "queue": "short",
         "parameters": {"max_memory": "64G", "max_runtime": 7200, "max_cores": 8,
                        "default_memory": "1536M", "account": "lab", "priority": 5}},
    ]  # fmt: skip
    table = ok(jobfleet("queues", "list", "--cluster", "dummy", "--ledger", ledger)).stdout
    assert "max_runtime=2h" in table
    assert "max_runtime=7d" in table

    again = jobfleet("queues", "add", "dummy", "short", "--ledger", ledger, "--max-cores", "4")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert "--replace" in again.stderr
    ok(jobfleet("queues", "add", "dummy", "short", "--ledger", ledger, "--max-cores", "4",
                "--replace"))  # fmt: skip
    listed = json.loads(ok(jobfleet("queues", "list", "--json", "--ledger", ledger)).stdout)
    assert listed[1]["parameters"] == {"max_cores": 4}

    removed = ok(jobfleet("queues", "remove", "dummy", "short", "--ledger", ledger))
    assert "Removed the queue 'short'" in removed.stdout
    listed = json.loads(ok(jobfleet("queues", "list", "--json", "--ledger", ledger)).stdout)
    assert [entry["queue"] for entry in listed] == ["long"]
    missing = jobfleet("queues", "remove", "dummy", "short", "--ledger", ledger)
    assert missing.returncode == 1
    assert "has no queue 'short' (its queues: long)" in missing.stderr


def test_queues_add_and_remove_as_json(tmp_path: Path) -> None:
    ledger = str(tmp_path / "queues.db")
    added = ok(jobfleet("queues", "add", "dummy", "short", "--max-memory", "2048M", "--json",
                        "--ledger", ledger))  # fmt: skip
    assert json.loads(added.stdout) == {
        "cluster": "dummy", "queue": "short", "parameters": {"max_memory": "2G"},
        "replaced": False, "new_cluster": True, "cluster_type": "dummy",
    }  # fmt: skip
    removed = ok(jobfleet("queues", "remove", "dummy", "short", "--json", "--ledger", ledger))
    assert json.loads(removed.stdout) == {"cluster": "dummy", "queue": "short", "removed": True}


def test_queues_add_refuses_a_bare_memory_number(tmp_path: Path) -> None:
    ledger = str(tmp_path / "queues.db")
    Ledger.open(ledger).close()
    result = jobfleet("queues", "add", "dummy", "q", "--max-memory", "12", "--ledger", ledger)
    assert result.returncode == 1
    assert "'max_memory'" in result.stderr
    assert "no unit" in result.stderr
    assert "Traceback" not in result.stderr
    bad_order = jobfleet(
        "queues", "add", "dummy", "q", "--ledger", ledger,
        "--max-memory", "1G", "--default-memory", "2G",
    )  # fmt: skip
    assert bad_order.returncode == 1
    assert "'default_memory'" in bad_order.stderr
    # Nothing was written: no queue, and no cluster either.
    assert json.loads(ok(jobfleet("queues", "list", "--json", "--ledger", ledger)).stdout) == []


def test_queues_add_refuses_memory_no_task_can_run_in(tmp_path: Path) -> None:
    ledger = str(tmp_path / "queues.db")
    for option in ("--max-memory", "--default-memory"):
        result = jobfleet("queues", "add", "dummy", "q", option, "100K", "--ledger", ledger)
        assert result.returncode == 1
        assert "'100K' is below 1M, the least memory a task may have" in result.stderr
    assert not Path(ledger).exists()  # refused before the ledger was even opened


def test_queues_add_needs_an_installed_backend(tmp_path: Path) -> None:
    ledger = str(tmp_path / "queues.db")
    result = jobfleet("queues", "add", "nosuchbackend", "q", "--ledger", ledger)
    assert result.returncode == 1
    assert "no backend is installed under that name" in result.stderr
    assert "Installed: " in result.stderr
    assert "dummy" in result.stderr


def test_queues_remove_refuses_a_queue_in_use(filled: Filled) -> None:
    with Ledger.open(filled.path) as ledger, ledger.session() as session:
        cluster_id = session.scalars(select(Cluster.id).where(Cluster.name == "dummy")).one()
        queue = Queue(cluster_id=cluster_id, name="busy", parameters={})
        session.add(queue)
        session.flush()
        session.add_all([Array(run_id=filled.demo, queue_id=queue.id, size=2) for _ in range(2)])
    result = filled.run("queues", "remove", "dummy", "busy")
    assert result.returncode == 1
    assert "is used by 2 arrays (of 1 run)" in result.stderr
    listed = json.loads(ok(filled.run("queues", "list", "--json")).stdout)
    assert [entry["queue"] for entry in listed] == ["busy"]


@pytest.mark.parametrize("command", ["status", "logs", "usage", "events", "queues"])
def test_help_explains(command: str) -> None:
    result = jobfleet(command, "--help")
    assert result.returncode == 0
    assert f"Usage: jobfleet {command}" in result.stdout
    assert "--ledger" in result.stdout or command == "queues"


@pytest.mark.parametrize("command", ["status", "kill"])
def test_an_optional_run_shows_as_optional(command: str) -> None:
    usage = ok(jobfleet(command, "--help")).stdout.splitlines()[0]
    assert usage == f"Usage: jobfleet {command} [OPTIONS] [RUN]"


# --- status: the stdlib reader answers as SQLAlchemy does -----------------------------------
# `status` of a current SQLite ledger is read with sqlite3 (host/quick_read.py: start-up time);
# every other ledger through SQLAlchemy. Both must print the same, byte for byte.


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def many_states(filled: Filled) -> Filled:
    """`filled` and more runs: killed, created, owners alive, dead and expired, odd names."""
    here = socket.gethostname()
    now = utcnow()
    with Ledger.open(filled.path) as ledger, ledger.session() as session:
        cluster_id = session.scalars(select(Cluster.id)).one()

        def run(name: str, status: str, **values: Any) -> Run:
            made = Run(name=name, cluster_id=cluster_id, status=status, **values)
            session.add(made)
            session.flush()
            return made

        killed = run("stopped", "killed", finished_at=now - timedelta(minutes=1))
        _attempt(session, _task(session, killed, "was running", "killed"), "IORK", "1G")
        _attempt(session, _task(session, killed, "finished", "done"), "IORD", "2G", cpu=0.25)
        _task(session, killed, "never started", "killed")
        orphan = run("orphan", "running", owner_token=f"{here}:{_dead_pid()}:x",
                     lease_expires_at=now + timedelta(minutes=10))  # fmt: skip
        runner = _task(session, orphan, "[bold red]not markup[/]", "pending")
        _attempt(session, runner, "IOR", "512M", hostname="node2")
        _task(session, orphan, "no attempt yet", "pending")
        odd = _task(session, orphan, "café ✓", "pending")
        instance = add_instance(session, odd, {"memory": 1024, "cores": 1})
        transition(session, instance, "I", "picked")
        run("expired", "running", owner_token="elsewhere:1:y",  # noqa: S106
            lease_expires_at=now - timedelta(minutes=1))  # fmt: skip
        mine = run("mine", "running", owner_token=f"{here}:{os.getpid()}:z",
                   lease_expires_at=now + timedelta(minutes=10))  # fmt: skip
        _attempt(session, _task(session, mine, "fatal", "failed"), "IORF", "100M")
        run("created", "created")
        run("4242", "done")  # digits that are no run's id: a name
        run(str(filled.live), "done")  # digits that are a run's id: the id wins
        run("twice", "done")
        run("twice", "failed")
    return filled


STATUS_ARGS = [
    [], ["--json"], ["--limit", "2"], ["--limit", "2", "--json"], ["--all"], ["--all", "--json"],
    ["999"], ["nope"], ["twice"], ["4242"], ["4242", "--json"],
]  # fmt: skip
RUN_ARGS = [[], ["--json"], ["--limit", "1"], ["--limit", "1", "--json"], ["--all"],
            ["--all", "--json", "--limit", "1"]]  # fmt: skip
RUNS = ["demo", "live", "stopped", "orphan", "expired", "mine", "created", " 1 "]


@dataclass
class InProcess:
    """`jobfleet ARGS` run in this process, through the stdlib reader or with it turned off."""

    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    answered: list[str]

    def run(self, *args: str, quick: bool = True) -> tuple[int, str, str]:
        from jobfleet.core.cli import main
        from jobfleet.core.host import quick_read

        with self.monkeypatch.context() as patch:
            if not quick:
                patch.setattr(quick_read, "sqlite_file", lambda url: None)
            self.capsys.readouterr()
            code = main(list(args))
            out, err = self.capsys.readouterr()
        return code, out, err

    def both(self, *args: str) -> tuple[int, str, str]:
        """The output of both readers, checked to be the same; the stdlib one's first."""
        quick = self.run(*args)
        assert quick == self.run(*args, quick=False), args
        return quick


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    from jobfleet.core.host import quick_read

    for name in list(os.environ):
        if name.startswith("JOBFLEET_"):
            monkeypatch.delenv(name)
    answered: list[str] = []
    real = quick_read.open_reader

    @contextmanager
    def spy(database: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with real(database, *args, **kwargs) as reader:
            answered.append(database)  # the stdlib reader got past its checks
            yield reader

    monkeypatch.setattr(quick_read, "open_reader", spy)
    return InProcess(monkeypatch, capsys, answered)


def test_status_reads_alike_without_sqlalchemy(many_states: Filled, in_process: InProcess) -> None:
    ledger = ["--ledger", str(many_states.path)]
    for args in STATUS_ARGS + [[ref, *more] for ref in RUNS for more in RUN_ARGS]:
        code, _, err = in_process.both("status", *args, *ledger)
        assert in_process.answered.pop() == str(many_states.path), args
        assert "Traceback" not in err
        assert (code == 0) == (args[:1] not in (["999"], ["nope"], ["twice"])), (args, err)
    # The owner's state is worked out alike: alive, dead (orphaned), expired, elsewhere.
    runs = {run["name"]: run for run in json.loads(in_process.run("status", "--json", *ledger)[1])
            ["runs"]}  # fmt: skip
    assert (runs["mine"]["owner_active"], runs["mine"]["owner_orphaned"]) == (True, False)
    assert (runs["orphan"]["owner_active"], runs["orphan"]["owner_orphaned"]) == (False, True)
    assert (runs["expired"]["owner_active"], runs["expired"]["owner_orphaned"]) == (False, False)
    assert runs["live"]["owner_active"] is True
    assert "orphaned: owner dead" in in_process.run("status", "orphan", *ledger)[1]
    assert in_process.run("status", "4242", *ledger)[1].startswith("Run ")


def test_status_reads_alike_from_every_form_of_a_sqlite_ledger_name(
    filled: Filled, in_process: InProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "a dir+with %20 odd name"
    odd.mkdir()
    shutil.copyfile(filled.path, odd / "ledger.db")
    monkeypatch.chdir(odd)
    (odd / ".jobfleet").mkdir()
    shutil.copyfile(filled.path, odd / ".jobfleet" / "ledger.db")
    names = {  # the ledger, and whether the name reaches it
        "absolute": (["--ledger", str(odd / "ledger.db")], True),
        "relative": (["--ledger", "ledger.db"], True),
        "quoted URL": (["--ledger", "sqlite:///" + quote(str(odd / "ledger.db"))], True),
        "relative URL": (["--ledger", "sqlite:///ledger.db"], True),
        # A URL is unquoted: "%20" is a space, and this file does not exist.
        "unquoted URL": (["--ledger", f"sqlite:///{odd / 'ledger.db'}"], False),
        "default": ([], True),
    }
    for name, (ledger, found) in names.items():
        for args in ([], ["demo"], ["nope"], ["--json"]):
            code, _, err = in_process.both("status", *args, *ledger)
            assert (code == 0) == (found and args != ["nope"]), (name, args, err)
            assert len(in_process.answered) == int(found), name
            in_process.answered.clear()
    monkeypatch.setenv("JOBFLEET_LEDGER", "ledger.db")
    in_process.both("status", "demo")
    assert in_process.answered == [str(odd / "ledger.db")]


def _ledger_at_revision(path: Path, revision: str) -> None:
    from alembic import command

    from jobfleet.core.host.ledger.engine import create_ledger_engine, resolve_url
    from jobfleet.core.host.ledger.migrate import alembic_config

    engine = create_ledger_engine(resolve_url(path))
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _sql(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


def _files(directory: Path) -> list[str]:
    # SQLite's -wal and -shm files come and go with any reader of a WAL database.
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_status_leaves_other_ledgers_to_sqlalchemy(
    filled: Filled, in_process: InProcess, tmp_path: Path
) -> None:
    """An older schema (migrated, as before), a newer one, another application's database, a
    file that is no database, a missing file, PostgreSQL: the SQLAlchemy path answers (or
    refuses) as it always has, and the stdlib reader never answers nor writes."""
    older = tmp_path / "older.db"
    _ledger_at_revision(older, "0004")
    assert in_process.run("status", "--json", "--ledger", str(older)) == (
        0,
        '{\n  "runs": []\n}\n',
        "",
    )
    newer = tmp_path / "newer.db"
    shutil.copyfile(filled.path, newer)
    _sql(newer, "UPDATE alembic_version SET version_num = '9999'")
    foreign = tmp_path / "foreign.db"
    _sql(foreign, "CREATE TABLE people (id INTEGER PRIMARY KEY)")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, " * 100)
    refused = {
        newer: "revision '9999', which this jobfleet does not know",
        foreign: "is not a jobfleet ledger: it has tables (people)",
        garbage: "could not be opened: file is not a database",
        tmp_path / "missing.db": "There is no ledger at",
        tmp_path / "no-such-dir" / "ledger.db": "There is no ledger at",
    }
    for path, message in refused.items():
        before = _files(tmp_path), path.exists() and path.read_bytes()
        for args in ([], ["demo", "--json"]):
            code, out, err = in_process.both("status", *args, "--ledger", str(path))
            assert (code, out) == (1, ""), path
            assert message in err
            assert "Traceback" not in err
        assert (_files(tmp_path), path.exists() and path.read_bytes()) == before, path
    postgres = "postgresql+psycopg://someone:secret@127.0.0.1:1/nothing"
    code, _, err = in_process.both("status", "--ledger", postgres)
    assert code == 1
    assert "secret" not in err
    assert in_process.answered == []
