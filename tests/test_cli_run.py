"""`jobfleet run` and `jobfleet kill` as a user runs them: real processes, a real ledger."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from jobfleet.core.testing.host import is_locked, wait_for

from .test_cli import JOBFLEET

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def jobfleet(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert JOBFLEET
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ["TMPDIR"] = str(cwd)  # the hello example keeps its "failed once" marker there
    return subprocess.run(
        [JOBFLEET, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environ,
        check=False,
        timeout=timeout,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_hello_example_ends_done_with_a_scaled_memory_retry(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    result = jobfleet(tmp_path, "run", "examples/hello.yaml", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "done"
    tasks = {task["name"]: task for task in summary["tasks"]}
    assert {t["task_state"] for t in tasks.values()} == {"done"}
    assert tasks["flaky"]["attempts"] == 2
    assert tasks["memory-hungry"]["attempts"] == 2
    assert (tmp_path / ".jobfleet" / "ledger.db").exists()  # the default ledger

    report = as_json(jobfleet(tmp_path, "usage", "1", "--json"))
    usage = {row["name"]: row for row in report["tasks"]}
    assert usage["memory-hungry"]["memory_by_attempt"] == ["100M", "150M"]
    assert usage["memory-hungry"]["maxrss"] > 100 * 2**20
    events = jobfleet(tmp_path, "events", "1")
    assert "memory 100M → 150M" in events.stdout
    assert "R → Z" in events.stdout or "O → Z" in events.stdout


def test_a_command_after_double_dash_keeps_its_own_arguments(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = jobfleet(
        tmp_path,
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        'printf "%s|" "$@" > "$0"',
        str(out),
        "a b",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "a b|--json|"


def test_exit_status_is_1_when_a_task_fails(tmp_path: Path) -> None:
    result = jobfleet(tmp_path, "run", "--max-attempts", "2", "--json", "--", "sh", "-c", "exit 3")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed"
    assert summary["state_counts"] == {"E": 2}


def test_a_malformed_task_file_writes_nothing(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  - name: a\n    command: echo\n    resources: {memory: 12}\n")
    result = jobfleet(tmp_path, "run", str(tasks))
    assert result.returncode == 1
    assert "tasks.yaml:4" in result.stderr
    assert "memory" in result.stderr
    assert as_json(jobfleet(tmp_path, "status", "--json"))["runs"] == []


def test_an_endless_file_and_an_overlong_command_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    endless = jobfleet(tmp_path, "run", "/dev/zero")
    assert endless.returncode == 1
    assert "/dev/zero: The file is larger than 64 MiB" in endless.stderr
    half = "x" * 40_000  # each argument fits Linux's 128 KiB; the command they make does not
    overlong = jobfleet(tmp_path, "run", "--", "echo", half, half, half, half)
    assert overlong.returncode == 1
    assert "bytes long; the most is 65,536 bytes (64 KiB)" in overlong.stderr
    assert "Traceback" not in endless.stderr + overlong.stderr
    assert as_json(jobfleet(tmp_path, "status", "--json"))["runs"] == []


def test_a_large_run_ends_with_a_bounded_summary(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"echo {n}\n" for n in range(1000)))
    argv = ["run", "--cluster", "dummy", "--dummy-fail-every", "7", "--max-attempts", "1"]
    result = jobfleet(tmp_path, *argv, str(tasks))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 40, result.stdout[-2000:]  # not a line per task
    assert "run 1: failed; 1000 tasks: done 858, failed 142" in lines[0]
    assert "not done: 10 of 142" in result.stdout
    assert "line-7 " in result.stdout  # the first failure is named
    assert "jobfleet status 1 --all" in result.stdout
    every = as_json(jobfleet(tmp_path, "status", "1", "--all", "--json"))
    assert len(every["tasks"]) == 1000
    # --json keeps every task.
    as_data = as_json(jobfleet(tmp_path, *argv, "--json", str(tasks)))
    assert len(as_data["tasks"]) == 1000
    assert as_data["task_counts"] == {"done": 858, "failed": 142}


def test_detach_then_kill(tmp_path: Path) -> None:
    lock = tmp_path / "held"
    started = as_json(
        jobfleet(tmp_path, "run", "--detach", "--json", "--", "flock", str(lock), "sleep", "300")
    )
    run_id = str(started["run"])

    def running() -> bool:
        status = as_json(jobfleet(tmp_path, "status", run_id, "--json"))
        return status["state_counts"].get("R", 0) == 1

    wait_for(running, "the detached run's task to start")
    second = jobfleet(tmp_path, "run", "--resume", run_id)
    assert second.returncode == 1
    assert "being run by another service" in second.stderr
    # Detached, the same refusal comes before detaching, not only in a log nobody reads.
    detached = jobfleet(tmp_path, "run", "--detach", "--resume", run_id)
    assert detached.returncode == 1
    assert "being run by another service" in detached.stderr
    assert "continues in the background" not in detached.stdout

    killed = as_json(jobfleet(tmp_path, "kill", run_id, "--json"))
    assert killed["status"] == "killed"
    assert len(killed["killed"]) == 1
    assert not is_locked(lock)
    status = as_json(jobfleet(tmp_path, "status", run_id, "--json"))
    assert status["task_counts"] == {"killed": 1}


def test_kill_after_the_detached_service_died_carries_the_kill_out(tmp_path: Path) -> None:
    lock, pid_file = tmp_path / "held", tmp_path / "task.pid"
    task = f"echo $$ > {pid_file}; exec sleep 300"
    started = as_json(
        jobfleet(tmp_path, "run", "--detach", "--json", "--", "flock", str(lock), "sh", "-c", task)
    )
    run_id, service = str(started["run"]), int(started["pid"])
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the task to start")
    task_pid = int(pid_file.read_text())
    os.kill(service, signal.SIGKILL)
    wait_for(lambda: not _alive(service), "the service to die")

    status = as_json(jobfleet(tmp_path, "status", run_id, "--json"))
    assert (status["run"]["owner_active"], status["run"]["owner_orphaned"]) == (False, True)
    assert "(orphaned: owner dead)" in jobfleet(tmp_path, "status", run_id).stdout
    assert "(orphaned: owner dead)" in jobfleet(tmp_path, "status").stdout

    killed = jobfleet(tmp_path, "kill", run_id, "--json")
    assert killed.returncode == 0, killed.stderr
    result = json.loads(killed.stdout)
    # Carried out here, at once: not waited for from a service that is gone.
    assert (result["status"], result["carried_out_here"], len(result["killed"])) == (
        "killed",
        True,
        1,
    )
    assert not _alive(task_pid)
    assert not is_locked(lock)
    after = as_json(jobfleet(tmp_path, "status", run_id, "--json"))
    assert after["task_counts"] == {"killed": 1}
    assert after["run"]["owner_orphaned"] is False


def _alive(pid: int) -> bool:
    """Whether the process runs: neither gone nor a zombie (a killed process whose parent, here
    perhaps a PID 1 that reaps nobody, has not reaped it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rpartition(b")")[2].split()[0] not in (b"Z", b"X")


def test_detach_resume_of_a_finished_run_is_refused_before_detaching(tmp_path: Path) -> None:
    assert jobfleet(tmp_path, "run", "--", "true").returncode == 0
    again = jobfleet(tmp_path, "run", "--detach", "--resume", "1")
    assert again.returncode == 1
    assert "already over (done)" in again.stderr
    assert "continues in the background" not in again.stdout
    assert not (tmp_path / ".jobfleet" / "runs" / "run-1" / "service.log").exists()


def test_resume_of_a_finished_run_says_so(tmp_path: Path) -> None:
    assert jobfleet(tmp_path, "run", "--", "true").returncode == 0
    again = jobfleet(tmp_path, "run", "--resume", "1")
    assert again.returncode == 1
    assert "already over (done)" in again.stderr


def test_run_help_lists_backend_settings(tmp_path: Path) -> None:
    result = jobfleet(tmp_path, "run", "--help")
    assert result.returncode == 0
    assert "--multiprocess-cores" in result.stdout
    assert "--resume" in result.stdout


def test_ctrl_c_kills_the_runs_tasks(tmp_path: Path) -> None:
    assert JOBFLEET
    lock = tmp_path / "held"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    process = subprocess.Popen(
        [JOBFLEET, "run", "--json", "--", "flock", str(lock), "sleep", "300"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: is_locked(lock), "the task to start")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, err
    assert "SIGINT: killing the tasks of run 1" in err
    assert json.loads(out)["status"] == "killed"
    assert not is_locked(lock)


def test_a_database_of_another_application_is_not_made_a_ledger(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    connection.close()
    for command in (["run"], ["status"], ["queues", "add", "dummy", "q"]):
        args = [*command, "--ledger", str(other), *(["--", "true"] if command == ["run"] else [])]
        result = jobfleet(tmp_path, *args)
        assert result.returncode == 1, (args, result.stdout)
        assert f"The database file {other} is not a jobfleet ledger" in result.stderr
        assert "Traceback" not in result.stderr
    with sqlite3.connect(other) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert tables == {"notes"}


def test_a_misspelt_queue_is_refused_unless_asked_for(tmp_path: Path) -> None:
    refused = jobfleet(tmp_path, "run", "--queue", "shrot", "--", "true")
    assert refused.returncode == 1
    assert "names the queue 'shrot', which the cluster 'multiprocess' does not have" in (
        refused.stderr
    )
    assert "jobfleet queues add multiprocess shrot" in refused.stderr
    assert as_json(jobfleet(tmp_path, "status", "--json"))["runs"] == []
    done = jobfleet(tmp_path, "run", "--queue", "shrot", "--new-queue", "--json", "--", "true")
    assert done.returncode == 0, done.stderr
    queues = as_json(jobfleet(tmp_path, "queues", "list", "--json"))
    assert sorted(q["queue"] for q in queues) == ["default", "shrot"]


def test_gpus_the_machine_does_not_have_are_refused_at_run(tmp_path: Path) -> None:
    assert JOBFLEET
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.pop("CUDA_VISIBLE_DEVICES", None)  # the multiprocess pool then has no GPU
    result = subprocess.run(
        [JOBFLEET, "run", "--gpus", "750", "--", "true"],
        cwd=tmp_path, capture_output=True, text=True, env=environ, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "gpus 750 is above the queue maximum of 0" in result.stderr
    assert as_json(jobfleet(tmp_path, "status", "--json"))["runs"] == []


def test_a_run_over_the_http_channel_survives_its_service_and_resumes_on_the_same_url(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "tasks:\n"
        "  - name: quick\n    command: echo quick\n"
        "  - name: env\n    command: env\n"
        f"  - name: waits\n    command: while [ ! -e {go} ]; do sleep 0.1; done; echo waited\n"
    )
    argv = ["run", "--channel", "http", "--detach", "--json", str(tasks)]
    started = as_json(jobfleet(tmp_path, *argv))
    run_id, service = str(started["run"]), int(started["pid"])

    def progressed() -> bool:
        status = as_json(jobfleet(tmp_path, "status", run_id, "--json"))
        return status["task_counts"].get("done") == 2 and status["state_counts"].get("R") == 1

    wait_for(progressed, "two tasks done and one running")
    ledger = tmp_path / ".jobfleet" / "ledger.db"
    before = _channel_options(ledger)
    assert before["transport"] == "http"
    assert not before["bind"].endswith(":0")  # the port taken is stored, for --resume
    os.kill(service, signal.SIGKILL)
    wait_for(lambda: not _alive(service), "the service to die")
    go.touch()  # the wrapper of "waits" now reports to a host that is gone, and retries

    resumed = jobfleet(tmp_path, "run", "--resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "done"
    # The wrapper that outlived the service reported to the channel served again at the same
    # URL: its attempt counted, nothing was run twice.
    assert {t["name"]: t["attempts"] for t in summary["tasks"]} == {
        "quick": 1,
        "env": 1,
        "waits": 1,
    }
    assert _channel_options(ledger) == before

    [run_dir] = (tmp_path / ".jobfleet" / "runs").iterdir()
    token_file = run_dir / "channel" / "http-token"
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    [env_log] = (run_dir / "logs").glob("env.stdout.*")
    printed = env_log.read_text()
    assert "JOBFLEET_CHANNEL_TOKEN" not in printed
    assert token not in printed
    assert token.encode() not in ledger.read_bytes()
    service_log = (run_dir / "service.log").read_text()
    assert token not in service_log + resumed.stdout + resumed.stderr


def _channel_options(ledger: Path) -> Any:
    with sqlite3.connect(ledger) as connection:
        row = connection.execute("SELECT options FROM runs WHERE id = 1").fetchone()
    return json.loads(row[0])["channel"]


def test_channel_options_are_checked(tmp_path: Path) -> None:
    wrong = jobfleet(
        tmp_path, "run", "--channel", "file", "--channel-bind", "0.0.0.0:1", "--", "true"
    )
    assert wrong.returncode == 2
    assert "--channel-bind only apply to --channel http" in wrong.stderr
    bad = jobfleet(tmp_path, "run", "--channel-bind", "nowhere", "--", "true")
    assert bad.returncode == 1
    assert "must be HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr
    address = jobfleet(
        tmp_path, "run", "--channel", "http", "--channel-address", "ftp://x", "--", "true"
    )
    assert "must be a http:// URL" in address.stderr
    assert jobfleet(tmp_path, "run", "--", "true").returncode == 0
    again = jobfleet(tmp_path, "run", "--resume", "1", "--channel", "http")
    assert again.returncode == 2
    assert "--channel is for new runs" in again.stderr
