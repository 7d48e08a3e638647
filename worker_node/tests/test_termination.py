"""The wrapper's final exit record in the termination log ($JOBFLEET_TERMINATION_LOG)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jobfleet.core.channel import FinalReport, TaskSpec, open_channel
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord
from jobfleet.core.wrapper import (
    HOST_ONLY_VARIABLES,
    TERMINATION_LOG_LIMIT,
    TERMINATION_LOG_VARIABLE,
)
from jobfleet.worker_node.termination import termination_record


def test_the_variable_is_the_hosts_own_so_no_task_sees_it() -> None:
    assert TERMINATION_LOG_VARIABLE in HOST_ONLY_VARIABLES


def test_a_big_report_is_cut_to_the_limit_and_still_reads_back() -> None:
    record = ExitRecord(ExitReason.FAILED, exit_code=3, message="m" * 5000)
    report = FinalReport(
        ErrorState.ERROR_RECOVERABLE,
        "x" * 6000,
        exit=record,
        stdout_tail="o" * 8000,
        stderr_tail="é" * 8000,
    )
    text = termination_record(report)
    assert len(text) <= TERMINATION_LOG_LIMIT
    back = FinalReport.from_dict(json.loads(text))
    assert back.error_state is ErrorState.ERROR_RECOVERABLE
    assert back.exit is not None
    assert back.exit.exit_code == 3


def test_a_small_report_is_kept_whole() -> None:
    report = FinalReport(ErrorState.DONE, "fine", stdout_tail="hello\n")
    assert FinalReport.from_dict(json.loads(termination_record(report))) == report


def _wrapper() -> str:
    wrapper = shutil.which("jobfleet-worker-node")
    if wrapper is None:
        pytest.skip("jobfleet-worker-node is not installed")
    return wrapper


def _run(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    channel = open_channel(f"file://{tmp_path / 'channel'}", create=True)
    channel.put_spec(TaskSpec(7, 'printf "%s" "${JOBFLEET_TERMINATION_LOG-unset}"; exit 3', "term"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    env[TERMINATION_LOG_VARIABLE] = str(tmp_path / "termination-log")
    argv = [_wrapper(), *args, "--cluster", "sequential", "--host-url", channel.url]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_wrapper_writes_its_final_record_there(tmp_path: Path) -> None:
    result = _run(tmp_path, ["job", "--task-instance-id", "7"])
    assert result.returncode == 3, result.stderr
    report = FinalReport.from_dict(json.loads((tmp_path / "termination-log").read_bytes()))
    assert report.error_state is ErrorState.ERROR_RECOVERABLE
    assert report.exit is not None
    assert report.exit.exit_code == 3
    assert report.stdout_tail == "unset", "the task saw the wrapper's termination log"


def test_a_wrapper_that_fails_before_the_task_writes_it_too(tmp_path: Path) -> None:
    result = _run(tmp_path, ["job", "--task-instance-id", "8"])  # no such spec
    assert result.returncode != 0
    report = FinalReport.from_dict(json.loads((tmp_path / "termination-log").read_bytes()))
    assert report.error_state is ErrorState.ERROR_FATAL
    assert report.exit is not None
    assert report.exit.reason is ExitReason.LAUNCHER_ERROR


def test_a_wrapper_killed_before_its_record_leaves_the_started_mark(tmp_path: Path) -> None:
    import signal
    import time

    from jobfleet.core.wrapper import TERMINATION_LOG_STARTED

    channel = open_channel(f"file://{tmp_path / 'channel'}", create=True)
    channel.put_spec(TaskSpec(9, "sleep 60", "killed"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    log = tmp_path / "termination-log"
    env[TERMINATION_LOG_VARIABLE] = str(log)
    argv = [_wrapper(), "job", "--task-instance-id", "9", "--cluster", "sequential"]
    process = subprocess.Popen([*argv, "--host-url", channel.url], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert log.read_text() == TERMINATION_LOG_STARTED
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert log.read_text() == TERMINATION_LOG_STARTED
