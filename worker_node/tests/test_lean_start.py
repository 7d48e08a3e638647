"""The wrapper's lean start path (issue 16): what a short task does not pay for, kept so.

The gains are measured by bench/worker_overhead.py; these tests only pin down the structure
behind them, so that an import added at the top of a module cannot silently bring the cost
back: the command line is read without argparse, the modules below are not imported for a
`true` task, and a task that ends at once starts no sampler or timer thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobfleet.core.channel import TaskSpec, open_channel
from jobfleet.worker_node import cli

# Imported only off the hot path: argparse (and the shutil, gettext it pulls in) for help and
# errors, importlib.metadata for --version, settings for the host, secrets never; typing,
# dataclasses (with inspect) and pathlib (with urllib.parse and ipaddress) by no module the
# wrapper imports; pluggy and the plugin registry only for a plugin without a
# `jobfleet.worker_nodes` entry point; http.client (with ssl and email) only for https.
LAZY = (
    "argparse",
    "shutil",
    "gettext",
    "secrets",
    "importlib.metadata",
    "jobfleet.core.settings",
    "typing",
    "dataclasses",
    "inspect",
    "pathlib",
    "urllib.parse",
    "ipaddress",
    "pluggy",
    "jobfleet.core.plugins",
    "jobfleet.core.hookspecs",
    "jobfleet.core.cluster_protocol",
    "jobfleet.plugins.dummy.queue",
    "jobfleet.plugins.dummy.distributor",
    "http.client",
    "ssl",
    "email",
)

PROBE = """
import sys, threading
started = []
original = threading.Thread.start
def start(self):
    started.append(self.name)
    original(self)
threading.Thread.start = start
from jobfleet.worker_node.cli import main
code = main({argv!r})
modules = sorted(sys.modules)
import json
print(json.dumps({{"code": code, "modules": modules, "threads": started}}))
"""


def _probe(tmp_path: Path, command: str, *, http: bool = False) -> dict:
    channel = open_channel(f"file://{tmp_path / 'channel'}", create=True)
    channel.put_spec(TaskSpec(7, command, "lean"))
    env = {**os.environ, "JOBFLEET_DISTRIBUTOR_ID": "lean"}
    url = channel.url
    if http:
        from jobfleet.core.host.channel_server import serve_channel

        served = serve_channel(channel, "lean")
        url, env["JOBFLEET_CHANNEL_TOKEN"] = served.url, served.token
    argv = ["job", "--task-instance-id", "7", "--cluster", "dummy", "--host-url", url]
    argv += ["--cgroup", "never"]
    try:
        return _run_probe(argv, env)
    finally:
        if http:
            served.close()


def _run_probe(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_true_task_imports_none_of_the_lazy_modules(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "true")
    assert seen["code"] == 0
    assert [name for name in LAZY if name in seen["modules"]] == []


def test_over_http_too_and_without_http_client(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "true", http=True)
    assert seen["code"] == 0
    assert "jobfleet.core.channel.http" in seen["modules"]  # the probe did go over http
    assert [name for name in LAZY if name in seen["modules"]] == []
    events, _ = open_channel(f"file://{tmp_path / 'channel'}").read_events()
    assert [event.kind.value for event in events] == ["running", "final"]


def test_a_task_that_ends_at_once_starts_no_sampler_or_timer(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "true")
    assert sorted(seen["threads"]) == ["jobfleet-stderr", "jobfleet-stdout"]


def test_a_task_that_runs_on_is_sampled_and_heartbeats_start(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "sleep 0.3")
    assert seen["code"] == 0
    assert {"jobfleet-sampler", "jobfleet-heartbeat"} <= set(seen["threads"])


def _argparse_reading(argv: list[str]) -> dict:
    return vars(cli._parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["job", "--task-instance-id", "3", "--cluster", "dummy", "--host-url", "file:///x"],
        ["job", "--task-instance-id=3", "--cluster=dummy", "--host-url=file:///x"],
        ["job", "--host-url", "http://h:1/r", "--task-instance-id", "0", "--cgroup", "always"],
        ["job", "--task-instance-id", " 12 ", "--kill-grace", "2.5", "--cluster", ""],
        ["job", "--task-instance-id", "+7", "--kill-grace", "inf", "--cgroup=never"],
        ["array", "--array-id", "4", "--batch-number", "0", "--cluster", "slurm"],
        ["array", "--batch-number", "9", "--array-id", "1", "--host-url", "/abs/dir"],
        ["job", "--task-instance-id", "5", "--cluster", "a=b"],
        ["array", "--array-id", "4", "--batch-number", "0", "--pack", "8", "--array-length", "30"],
        ["array", "--array-id=4", "--batch-number=0", "--pack=2"],
    ],
)
def test_the_fast_reading_is_argparse_s(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBFLEET_CLUSTER", "from-env")
    monkeypatch.setenv("JOBFLEET_HOST_URL", "file:///from/env")
    fast = cli._fast_parse(argv)
    assert fast is not None
    assert vars(fast) == _argparse_reading(argv)
    assert cli.parse_args(argv) == fast


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--version"],
        ["job", "--help"],
        ["job", "-h"],
        ["job"],  # the required id is missing
        ["job", "--task-instance-id"],
        ["job", "--task-instance-id", "-1"],
        ["job", "--task-instance-id", "x"],
        ["job", "--task-instance-id", "1", "--task-instance-id", "2"],
        ["job", "--task", "1"],  # an abbreviation: argparse's to accept
        ["job", "--task-instance-id", "1", "--cgroup", "sometimes"],
        ["job", "--task-instance-id", "1", "--kill-grace", "soon"],
        ["job", "--task-instance-id", "1", "--array-id", "2"],
        ["job", "--task-instance-id", "1", "--cluster", "-dash"],
        ["job", "--task-instance-id", "1", "stray"],
        ["job", "--task-instance-id", "1", "--", "x"],
        ["array", "--array-id", "1"],
        ["array", "--array-id", "1", "--batch-number", "0", "--pack", "0"],
        ["job", "--task-instance-id", "1", "--pack", "2"],
        ["run", "--task-instance-id", "1"],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert cli._fast_parse(argv) is None
