"""PSI/J's own executor test suite, run against the `jobfleet` executor.

The suite is psij-python's: its source distribution (the version installed, pinned by uv.lock
with its hash) is downloaded from the package index at test time, unpacked, given jobfleet's
harness (psij_harness/: the modules the suite imports that the sdist leaves out), and run as a
subprocess with `--executors=jobfleet:LAUNCHER[:BACKEND]`. Every test must pass or be skipped
with a reason; the reasons are checked too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).resolve().parent / "psij_harness"
SDIST_ENV = "JOBFLEET_PSIJ_SDIST"
"""A local copy of the sdist, to run offline (its hash is still checked against uv.lock)."""

# The executor-generic tests: those that take `execparams`, plus test_executor.py's others.
SUITE = [
    "tests/test_executor.py",
    "tests/test_issue_435.py",
    "tests/test_resources.py",
    "tests/test_mpi.py",
    "tests/test_nodefile.py",
]

# Skips the suite makes for reasons of its own; any other skip reason fails the test, so a new
# skip must be looked at (and named here) before it is accepted.
EXPECTED_SKIPS = {
    "This test requires mpirun",
    "This test does not work with the single launcher",
    "Unsupported executor/launcher combination",
    "psij-python's sdist does not ship tests/test_nodefile.sh",
}


def _locked_sdist() -> tuple[str, str, str]:
    """(version, url, sha256) of the psij-python sdist uv.lock pins."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    installed = version("psij-python")
    for package in lock["package"]:
        if package["name"] == "psij-python" and package["version"] == installed:
            sdist = package["sdist"]
            return installed, sdist["url"], sdist["hash"].removeprefix("sha256:")
    raise AssertionError(f"uv.lock has no sdist of psij-python {installed}")


def _sdist(cache: Path) -> Path:
    installed, url, digest = _locked_sdist()
    given = os.environ.get(SDIST_ENV)
    path = Path(given) if given else cache / f"psij-python-{installed}.tar.gz"
    if not path.exists():
        partial = path.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (https)
                partial.write_bytes(response.read())
        except OSError as exc:
            pytest.fail(f"cannot download psij-python's sdist from {url} ({exc}); set {SDIST_ENV}")
        partial.rename(path)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    assert found == digest, f"{path} has sha256 {found}, uv.lock says {digest}"
    return path


@pytest.fixture(scope="session")
def psij_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """psij-python's unpacked source distribution with jobfleet's harness in its tests/."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jobfleet-tests"
    cache.mkdir(parents=True, exist_ok=True)
    archive = _sdist(cache)
    where = tmp_path_factory.mktemp("psij-sdist")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    (root,) = where.iterdir()
    for module in HARNESS.glob("*.py"):
        shutil.copy(module, root / "tests" / module.name)
    # A config file of its own, so that pytest does not climb to another project's.
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


@dataclass
class SuiteResult:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    output: str = ""


def run_suite(
    suite: Path, executors: str, home: Path, environ: dict[str, str] | None = None
) -> SuiteResult:
    """Run the suite in a subprocess; what passed, failed (or errored) and was skipped why."""
    report = home / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    env.update(
        # ~/.psij holds the tests' files and PSI/J's work directory (launcher scripts).
        HOME=str(home),
        JOBFLEET_LEDGER=str(home / "ledger.db"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(environ or {})
    command = [
        sys.executable,
        "-m",
        "pytest",
        *SUITE,
        f"--executors={executors}",
        "-p",
        "no:cacheprovider",
        "-rs",
        "-q",
        f"--junitxml={report}",
    ]
    process = subprocess.run(
        command, cwd=suite, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    result = SuiteResult(output=process.stdout[-20000:] + process.stderr[-5000:])
    assert report.exists(), f"the suite produced no report:\n{result.output}"
    # The report is the one our own pytest subprocess just wrote.
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = _outcome(case)
        if outcome is None:
            result.passed.append(name)
        elif outcome[0] == "skipped":
            result.skipped[name] = outcome[1]
        else:
            result.failed.append(name)
    return result


def _outcome(case: Any) -> tuple[str, str] | None:
    for child in case:
        if child.tag == "skipped":
            return "skipped", (child.get("message") or "").removeprefix("Skipped: ").strip()
        if child.tag in ("failure", "error"):
            return child.tag, child.get("message") or ""
    return None


def check(result: SuiteResult) -> None:
    print(f"PSI/J suite: {len(result.passed)} passed, {len(result.skipped)} skipped")
    for name, reason in sorted(result.skipped.items()):
        print(f"  skipped {name}: {reason}")
    assert not result.failed, f"PSI/J tests failed: {result.failed}\n{result.output}"
    assert result.passed, f"no PSI/J test ran:\n{result.output}"
    unexplained = {n: r for n, r in result.skipped.items() if r not in EXPECTED_SKIPS}
    assert not unexplained, f"skips without a known reason: {unexplained}"


@pytest.mark.slow
def test_psij_suite_on_multiprocess(psij_suite: Path, tmp_path: Path) -> None:
    result = run_suite(
        psij_suite,
        "jobfleet:single,jobfleet:multiple",
        tmp_path,
        {"JOBFLEET_PSIJ_CLUSTER": "multiprocess"},
    )
    check(result)
    jobfleet = [name for name in result.passed if "jobfleet" in name]
    assert len(jobfleet) >= 20, result.output  # both launchers ran the executor tests


@pytest.mark.slow
def test_psij_suite_with_the_mpirun_launcher(psij_suite: Path, tmp_path: Path) -> None:
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun on PATH (PSI/J's mpirun launcher needs an MPI installation)")
    check(run_suite(psij_suite, "jobfleet:mpirun", tmp_path))


@pytest.mark.slow
def test_psij_suite_on_slurm(psij_suite: Path, tmp_path: Path, slurm_cluster: Any) -> None:
    """On the Slurm plugin's single-node test cluster (skips naming why without Slurm)."""
    home = Path(os.environ.get("JOBFLEET_PSIJ_SLURM_HOME", tmp_path))  # shared with the node
    result = run_suite(
        psij_suite,
        "jobfleet:single:slurm,jobfleet:multiple:slurm,jobfleet:srun:slurm",
        home,
        {"JOBFLEET_SLURM_POLL_MIN": "0.2", "JOBFLEET_SLURM_POLL_MAX": "1"},
    )
    check(result)
