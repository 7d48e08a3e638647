"""Fixtures of jobfleet-psij's tests: the Slurm plugin's single-node cluster, reused.

`slurm_cluster` is the Slurm plugin's own session fixture (plugins/slurm/tests/conftest.py),
loaded by path (test directories are not packages); it skips naming why where Slurm cannot run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SLURM_CONFTEST = Path(__file__).resolve().parents[3] / "plugins" / "slurm" / "tests" / "conftest.py"


def _slurm_conftest() -> ModuleType:
    name = "jobfleet_slurm_test_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SLURM_CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


slurm_cluster = _slurm_conftest().slurm_cluster
