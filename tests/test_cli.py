"""The `jobfleet` console script, run as a user runs it: a real process, real installed plugins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOBFLEET = shutil.which("jobfleet")


def jobfleet(*args: str, extra_path: Path | None = None, env: dict[str, str] | None = None):
    assert JOBFLEET, "the jobfleet console script is not installed in this environment"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    environ.update(env or {})
    if extra_path is not None:
        environ["PYTHONPATH"] = str(extra_path)
    return subprocess.run(
        [JOBFLEET, *args], capture_output=True, text=True, env=environ, check=False, timeout=120
    )


def test_plugins_json_lists_dummy_with_distribution_and_version():
    result = jobfleet("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["dummy"]["distribution"] == "jobfleet-dummy"
    assert plugins["dummy"]["version"] == "0.1.0"
    assert plugins["dummy"]["status"] == "ok"
    assert plugins["dummy"]["error"] is None


def test_broken_plugin_shows_as_broken_while_dummy_works(install_plugin):
    site = install_plugin(
        "jobfleet-kaput",
        {"kaput_plugin": "raise ImportError('no kaput client')"},
        {"kaput": "kaput_plugin"},
        version="2.3",
    )
    listing = jobfleet("plugins", "--json", extra_path=site)
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["kaput"]["status"] == "broken"
    assert plugins["kaput"]["distribution"] == "jobfleet-kaput"
    assert plugins["kaput"]["version"] == "2.3"
    assert "no kaput client" in plugins["kaput"]["error"]
    assert plugins["dummy"]["status"] == "ok"

    table = jobfleet("plugins", extra_path=site)
    assert table.returncode == 0
    assert "broken" in table.stdout
    assert "no kaput client" in table.stdout

    dummy = jobfleet("plugins", "dummy", "--json", extra_path=site)
    assert dummy.returncode == 0, dummy.stderr
    assert json.loads(dummy.stdout)["name"] == "dummy"


def test_a_plugin_error_with_brackets_is_shown_as_text(install_plugin):
    site = install_plugin(
        "jobfleet-brackets",
        {"brackets_plugin": "raise ImportError('[/] no [bold]x')"},
        {"brackets": "brackets_plugin"},
    )
    table = jobfleet("plugins", extra_path=site)
    assert table.returncode == 0, table.stderr
    assert "[/] no [bold]x" in table.stdout


def test_plugin_detail_lists_settings_as_options_and_variables():
    result = jobfleet("plugins", "dummy", "--json")
    assert result.returncode == 0, result.stderr
    detail = json.loads(result.stdout)
    settings = {s["field"]: s for s in detail["settings"]}
    assert settings["report_delay"]["option"] == "--dummy-report-delay"
    assert settings["report_delay"]["envvar"] == "JOBFLEET_DUMMY_REPORT_DELAY"
    assert settings["report_delay"]["default"] == 0.0
    assert detail["distributor_class"] == "jobfleet.plugins.dummy.distributor.DummyDistributor"
    text = jobfleet("plugins", "dummy")
    assert "--dummy-fail-every" in text.stdout


def test_version_shows_core_and_every_plugin():
    result = jobfleet("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("jobfleet-core 0.1.0")
    assert "dummy: jobfleet-dummy 0.1.0" in result.stdout
    report = json.loads(jobfleet("version", "--json").stdout)
    assert report["jobfleet-core"] == "0.1.0"
    assert any(p["name"] == "dummy" and p["status"] == "ok" for p in report["plugins"])


def test_unknown_plugin_is_an_error_without_traceback():
    result = jobfleet("plugins", "nosuchthing")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install jobfleet-nosuchthing" in result.stderr
    assert "dummy" in result.stderr


def test_disabled_plugin_is_listed_as_disabled():
    result = jobfleet("plugins", "--json", env={"JOBFLEET_DISABLE_PLUGINS": "dummy"})
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["dummy"]["status"] == "disabled"
    shown = jobfleet("plugins", "dummy", env={"JOBFLEET_DISABLE_PLUGINS": "dummy"})
    assert shown.returncode == 1
    assert "disabled by JOBFLEET_DISABLE_PLUGINS" in shown.stderr


def test_trace_goes_to_stderr_and_leaves_json_intact():
    result = jobfleet("plugins", "--json", env={"JOBFLEET_TRACE_PLUGINS": "1"})
    assert result.returncode == 0
    json.loads(result.stdout)
    assert "jobfleet: calling get_cluster_queue_class() of dummy" in result.stderr


@pytest.mark.parametrize(
    "args", [["--help"], ["plugins", "--help"], ["version", "--help"], ["ui", "--help"]]
)
def test_help_is_useful(args):
    result = jobfleet(*args)
    assert result.returncode == 0
    assert "Usage: jobfleet" in result.stdout
    assert "--json" in result.stdout or args == ["--help"]


def test_bad_option_is_a_usage_error():
    result = jobfleet("plugins", "--jsn")
    assert result.returncode == 2
    assert "No such option" in result.stderr


# A command run in this interpreter, then the names of the modules it imported (last line).
IMPORT_PROBE = (
    "import sys\n"
    "from jobfleet.core.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
    "sys.exit(code)\n"
)


def imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    """The modules a `jobfleet ARGS` process imported, and their top-level packages."""
    code, found = imported_by_with_code(*args, cwd=cwd)
    assert code == 0
    return found


def imported_by_with_code(*args: str, cwd: Path | None = None) -> tuple[int, set[str]]:
    """How `jobfleet ARGS` exited, and the modules it imported with their top-level packages."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *args],
        capture_output=True, text=True, env=environ, cwd=cwd, check=False, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    modules = result.stdout.rstrip().splitlines()[-1].removeprefix("MODULES ").split()
    return result.returncode, {name.split(".")[0] for name in modules} | set(modules)


@pytest.mark.parametrize("args", [["--help"], ["version"], ["status", "--help"], ["run", "--help"]])
def test_help_and_version_import_no_database_library(args: list[str]) -> None:
    # Start-up time (docs/performance.md): SQLAlchemy and Alembic are most of a second.
    found = imported_by(*args)
    assert not found & {"sqlalchemy", "alembic"}
    assert "jobfleet.core.host.ledger" not in found


def test_ui_help_imports_no_web_or_database_library() -> None:
    found = imported_by("ui", "--help")
    assert not found & {"sqlalchemy", "alembic", "starlette", "uvicorn", "jinja2"}


@pytest.fixture(scope="module")
def small_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A current SQLite ledger with one run of three tasks (as bench/cli_startup.py makes)."""
    from jobfleet.core.host.ledger import Ledger
    from jobfleet.core.host.runs import create_run
    from jobfleet.core.host.taskfile import TaskDefinition

    root = tmp_path_factory.mktemp("small")
    tasks = [TaskDefinition(name=f"task-{n}", command="true") for n in range(3)]
    with Ledger.open(root / "ledger.db") as ledger:
        create_run(ledger, tasks, cluster="dummy", work_root=root / "runs")
    return root / "ledger.db"


@pytest.mark.parametrize(
    "args",
    [["status"], ["status", "--json"], ["status", "--all"], ["status", "1"],
     ["status", "1", "--json", "--all"], ["status", "no-such-run"]],
)  # fmt: skip
def test_status_of_a_current_sqlite_ledger_imports_no_database_library(
    small_ledger: Path, args: list[str]
) -> None:
    # Start-up time: status of a SQLite ledger is read with the stdlib (host/quick_read.py).
    code, found = imported_by_with_code(*args, "--ledger", str(small_ledger))
    assert code == (1 if "no-such-run" in args else 0)
    assert not found & {"sqlalchemy", "alembic"}


def test_other_reading_commands_of_a_current_ledger_do_not_import_alembic(
    small_ledger: Path,
) -> None:
    found = imported_by("queues", "list", "--ledger", str(small_ledger))
    assert "sqlalchemy" in found
    assert "alembic" not in found
    assert "sqlalchemy.dialects.postgresql" not in found  # JSONB is loaded for PostgreSQL only
