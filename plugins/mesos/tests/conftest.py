"""Fixtures of the Mesos plugin's tests: a loopback Mesos master and agents (mesos_emulator/).

Test directories are not packages (pytest runs with --import-mode=importlib), so the emulator
package beside this file is loaded by path and registered as the top-level module
`mesos_emulator`: test modules can `from mesos_emulator import MesosCluster`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mesos_emulator import MesosCluster


def _load_emulator() -> ModuleType:
    if "mesos_emulator" in sys.modules:
        return sys.modules["mesos_emulator"]
    package = Path(__file__).with_name("mesos_emulator")
    spec = importlib.util.spec_from_file_location(
        "mesos_emulator", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mesos_emulator"] = module
    spec.loader.exec_module(module)
    return module


emulator = _load_emulator()


@pytest.fixture
def mesos_cluster(tmp_path: Path) -> Iterator[MesosCluster]:
    """A master with two agents (agent-1, agent-2: 2 cpus, 4096 MB, 10000 MB disk), stopped at
    teardown.

    Teardown fails the test when the emulator itself hit an internal error (a bug of the test
    infrastructure must not pass unnoticed).
    """
    mc = emulator.MesosCluster(tmp_path, agents=2)
    try:
        yield mc
    finally:
        mc.stop()
    assert not mc.internal_errors, "mesos emulator internal errors:\n" + "\n".join(
        mc.internal_errors
    )
