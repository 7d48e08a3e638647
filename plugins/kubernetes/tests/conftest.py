"""Fixtures of the Kubernetes plugin's tests: a loopback Kubernetes API server (kube_emulator/).

Test directories are not packages (pytest runs with --import-mode=importlib), so the emulator
package beside this file is loaded by path and registered as the top-level module
`kube_emulator`: test modules can `from kube_emulator import KubeEmulator`.
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
    from kube_emulator import KubeEmulator


def _load_emulator() -> ModuleType:
    if "kube_emulator" in sys.modules:
        return sys.modules["kube_emulator"]
    package = Path(__file__).with_name("kube_emulator")
    spec = importlib.util.spec_from_file_location(
        "kube_emulator", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kube_emulator"] = module
    spec.loader.exec_module(module)
    return module


emulator = _load_emulator()


@pytest.fixture
def kube_emulator(tmp_path: Path) -> Iterator[KubeEmulator]:
    emu = emulator.KubeEmulator(tmp_path)
    try:
        yield emu
    finally:
        emu.stop()
