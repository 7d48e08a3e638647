"""The `--executors` option of PSI/J's suite and the `execparams` parameter it feeds.

`--executors=jobfleet:single,jobfleet:multiple` runs every test that takes `execparams` once per
entry. A test whose support files the source distribution does not ship is skipped, naming the
missing file, rather than failing on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from executor_test_params import ExecutorTestParams

HERE = Path(__file__).resolve().parent

# Tests that read a file beside them which psij-python's sdist leaves out.
SUPPORT_FILES = {
    "test_nodefile.py": "test_nodefile.sh",
    "test_issue_387_1.py": "test_issue_387_1.run",
    "test_issue_387_2.py": "test_issue_387_2.run",
    "test_issue_387_3.py": "test_issue_387_3.run",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--executors",
        default="local:single",
        help="comma-separated NAME[:LAUNCHER[:URL]] entries to run the executor tests on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "execparams" in metafunc.fixturenames:
        entries = [e.strip() for e in metafunc.config.getoption("executors").split(",")]
        params = [ExecutorTestParams(entry) for entry in entries if entry]
        metafunc.parametrize("execparams", params, ids=str)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needed = SUPPORT_FILES.get(item.path.name)
        if needed and not (item.path.parent / needed).exists():
            item.add_marker(
                pytest.mark.skip(reason=f"psij-python's sdist does not ship tests/{needed}")
            )
