"""No input a user can type ends in a traceback: every command, fed bad input, says what is wrong.

Inputs: task and run names that look like rich markup, arguments that are not UTF-8, ids too
large for the database (and negative ones), garbage where a run or instance is expected.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .test_cli import JOBFLEET

HUGE = "9223372036854775808"  # 2**63: one past the largest id the database holds
HUGER = "1" + "0" * 40
NOT_UTF8 = b"caf\xe9"


def jobfleet(cwd: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    assert JOBFLEET
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    return subprocess.run(
        [JOBFLEET, *args], cwd=cwd, capture_output=True, env=environ, check=False, timeout=300
    )


def refused(result: subprocess.CompletedProcess[bytes], *args: object) -> str:
    """The error message of a command that must fail cleanly: status 1 or 2, a message, no
    traceback."""
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode in (1, 2), (args, result.returncode, stderr)
    assert "Traceback" not in stderr, (args, stderr)
    assert stderr.strip(), (args, "no message")
    return stderr


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with one finished run whose run and task names look like markup."""
    root = tmp_path_factory.mktemp("bad-input")
    tasks = root / "tasks.yaml"
    tasks.write_text(
        'tasks:\n  - name: "[/]"\n    command: "true"\n'
        '  - name: "[bold red]x[/bold red]"\n    command: "echo [/]"\n'
    )
    done = jobfleet(root, "run", str(tasks), "--name", "[/]", "--cluster", "multiprocess")
    assert done.returncode == 0, done.stderr.decode()
    return root


# Every command that takes a run, with the argument list around it.
RUN_COMMANDS = [
    ["status", "{}"],
    ["usage", "{}"],
    ["events", "{}"],
    ["kill", "{}", "--no-wait"],
    ["run", "--resume", "{}"],
]
# Every command that takes an instance id.
INSTANCE_COMMANDS = [
    ["logs", "{}"],
    ["events", "1", "--instance", "{}"],
    ["kill", "--instance", "{}", "--no-wait"],
]


@pytest.mark.parametrize("value", [HUGE, HUGER, "-1", "-9" + HUGE, "0x1", "1.5", "", "[/]"])
@pytest.mark.parametrize("command", RUN_COMMANDS + INSTANCE_COMMANDS, ids=" ".join)
def test_every_id_taking_command_refuses_bad_ids(
    ledger: Path, command: list[str], value: str
) -> None:
    args = [value if arg == "{}" else arg for arg in command]
    result = jobfleet(ledger, *args)
    if result.returncode == 0:
        # "[/]" and "" are names; only a run with that name may be found (and "[/]" is one).
        assert value in ("[/]", ""), (args, result.stdout)
        return
    message = refused(result, *args)
    if value in (HUGE, HUGER) and command in INSTANCE_COMMANDS:
        assert "9223372036854775807" in message


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--limit", HUGER],
        ["status", "1", "--limit", HUGE],
        ["logs", "1", "--tail", HUGER],
        ["kill", "1", "--timeout", "nan"],
        ["kill", "1", "--timeout", "-5"],
        ["run", "--array-size", HUGER, "--", "true"],
        ["run", "--max-attempts", "-1", "--", "true"],
    ],
    ids=" ".join,
)
def test_out_of_range_numbers_are_refused(ledger: Path, args: list[str]) -> None:
    result = jobfleet(ledger, *args)
    if result.returncode != 0:
        refused(result, *args)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "soon"])
def test_a_wait_that_is_not_a_finite_number_of_seconds_is_refused(ledger: Path, value: str) -> None:
    # float() reads "nan" and "inf": a kill waiting that long would never end, or end at once.
    result = jobfleet(ledger, "kill", "1", "--timeout", value)
    message = refused(result, "kill", "1", "--timeout", value)
    assert result.returncode == 2
    assert "--timeout" in message
    assert "seconds" in message


@pytest.mark.parametrize(
    "args",
    [
        [b"run", b"--", b"echo", NOT_UTF8],
        [b"run", b"--name", NOT_UTF8, b"--", b"true"],
        [b"run", NOT_UTF8 + b".yaml"],
        [b"status", NOT_UTF8],
        [b"usage", NOT_UTF8],
        [b"events", NOT_UTF8],
        [b"logs", NOT_UTF8],
        [b"kill", NOT_UTF8],
        [b"status", b"--ledger", NOT_UTF8 + b".db"],
        [b"queues", b"add", b"multiprocess", NOT_UTF8],
        [b"plugins", NOT_UTF8],
        [NOT_UTF8],
    ],
    ids=lambda args: " ".join(a.decode("utf-8", "replace") for a in args),
)
def test_arguments_that_are_not_utf8_are_refused(ledger: Path, args: list[bytes]) -> None:
    message = refused(jobfleet(ledger, *args), *args)
    assert "UTF-8" in message


def test_a_ledger_url_in_the_environment_that_is_not_utf8_is_refused(ledger: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ_bytes = {k.encode(): v.encode() for k, v in environ.items()}
    environ_bytes[b"JOBFLEET_LEDGER"] = NOT_UTF8 + b".db"
    assert JOBFLEET
    result = subprocess.run(
        [JOBFLEET, "status"], cwd=ledger, capture_output=True, env=environ_bytes, check=False
    )
    assert "UTF-8" in refused(result)


def test_a_task_file_that_is_not_utf8_is_refused(ledger: Path) -> None:
    bad = ledger / "latin1.yaml"
    bad.write_bytes(b'tasks:\n  - name: "caf\xe9"\n    command: "true"\n')
    assert "UTF-8" in refused(jobfleet(ledger, "run", str(bad)))


def test_markup_in_names_is_shown_as_typed(ledger: Path) -> None:
    outputs = {}
    for args in (["status"], ["status", "[/]"], ["usage", "[/]"], ["events", "[/]"]):
        result = jobfleet(ledger, *args)
        assert result.returncode == 0, (args, result.stderr.decode())
        outputs[" ".join(args)] = result.stdout.decode()
    assert "[/]" in outputs["status"]
    for shown in ("status [/]", "usage [/]"):
        assert "[bold red]x[/bold red]" in outputs[shown]
        assert "[/]" in outputs[shown]
    assert "([bold red]x[/bold red] #1)" in outputs["events [/]"]
    usage = json.loads(jobfleet(ledger, "usage", "[/]", "--json").stdout)
    assert {row["name"] for row in usage["tasks"]} == {"[/]", "[bold red]x[/bold red]"}


def test_markup_in_queue_parameters_and_ledger_paths_is_shown_as_typed(tmp_path: Path) -> None:
    where = tmp_path / "[bold]" / "[/]"
    where.mkdir(parents=True)
    ledger = str(where / "ledger.db")
    added = jobfleet(tmp_path, "queues", "add", "dummy", "[/]", "--param", "note=[/]", "--ledger",
                     ledger)  # fmt: skip
    assert added.returncode == 0, added.stderr.decode()
    listed = jobfleet(tmp_path, "queues", "list", "--ledger", ledger)
    assert listed.returncode == 0, listed.stderr.decode()
    assert "note=[/]" in listed.stdout.decode()
    empty = jobfleet(tmp_path, "status", "--ledger", ledger)
    assert empty.returncode == 0, empty.stderr.decode()
    assert "%5Bbold%5D/%5B/%5D/ledger.db" in empty.stdout.decode()  # as the URL quotes it
