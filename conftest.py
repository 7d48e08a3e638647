"""The workspace's shared test fixture: one real single-node Slurm cluster for the session.

It lives at the root so that every suite that needs Slurm (the Slurm plugin's, PSI/J's on
jobfleet) shares one cluster: a fixture defined in two conftest files is two fixtures, and
would start two clusters. `slurm_cluster` starts munged, MariaDB, slurmdbd, slurmctld and
slurmd under a temporary directory (see plugins/slurm/tests/slurm_cluster.py) and puts its
SLURM_CONF and PATH into os.environ for the whole session, so every Slurm command a test or
the plugin runs talks to it. It skips when the machine cannot run one (not root, no Slurm
binaries) and fails when it can but the cluster does not start: in CI, as root with the
packages installed, the tests must run.

The helper module is importable as `slurm_cluster` once this conftest is loaded (test modules
are imported after it): `from slurm_cluster import SlurmCluster`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from jobfleet.core.testing.host import abandoned_directories, hold_session_lock

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster


def _load_helper() -> ModuleType:
    # Test directories are not packages (pytest runs with --import-mode=importlib), so the
    # helper beside this file is loaded by path.
    if "slurm_cluster" in sys.modules:
        return sys.modules["slurm_cluster"]
    spec = importlib.util.spec_from_file_location(
        "slurm_cluster", Path(__file__).parent / "plugins" / "slurm" / "tests" / "slurm_cluster.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["slurm_cluster"] = module
    spec.loader.exec_module(module)
    return module


helper = _load_helper()

PREFIX = "jobfleet-slurm-"
NO_SLURM = "no Slurm binaries (apt-get install slurm-wlm munge slurmdbd mariadb-server)"
NOT_ROOT = "Slurm tests need root to run slurmd and slurmctld here"


def _sweep_stale_clusters() -> None:
    """Stop and remove clusters of earlier sessions that were killed before they could.

    Only directories whose lock nobody holds: a session running beside this one keeps its
    cluster.
    """
    for root in abandoned_directories(f"{PREFIX}*"):
        helper.SlurmCluster.attach(root).stop()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A started cluster whose env (SLURM_CONF, PATH) is in os.environ for the session."""
    missing = helper.missing_binaries()
    if missing:
        pytest.skip(f"{NO_SLURM}; missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    _sweep_stale_clusters()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    lock = hold_session_lock(root)
    # Backfill would hold a waiting big job's place against later small ones; the kit checks
    # that small jobs are not blocked behind a big one, as a fair local scheduler does.
    cluster: SlurmCluster = helper.SlurmCluster(
        scheduler_parameters=["bf_min_prio_reserve=4294967294"]
    )
    try:
        cluster.start(root)
    except BaseException:
        cluster.stop()  # the error carries the daemons' log tails
        raise
    environ = pytest.MonkeyPatch()
    for name, value in cluster.env.items():
        environ.setenv(name, value)
    try:
        yield cluster
    finally:
        environ.undo()
        cluster.stop()
        lock.close()


# --- elastic Slurm ------------------------------------------------------------------------------

ELASTIC_PREFIX = "jobfleet-slurm-elastic-"
# Short enough for a test to see nodes come and go, long enough for a loaded 2-core machine.
POWER_SAVING_TIMES = {"SuspendTime": 10, "ResumeTimeout": 90, "SuspendTimeout": 30}


@pytest.fixture(scope="session")
def elastic_slurm_cluster() -> Iterator[SlurmCluster]:
    """A second, independent cluster for elastic Slurm: one static node, three `State=CLOUD`
    nodes that slurmctld resumes and suspends through `jobfleet-slurm-resume` and
    `jobfleet-slurm-suspend`, and two spare nodes (partition "spare") for the local provisioner's
    own tests. The programs call the test's local provisioner (plugins/slurm/tests/
    local_provisioner.py), whose nodes are `slurmd -N NAME` daemons on this machine; its
    configuration is `jobfleet-power.toml` beside the cluster's slurm.conf.

    Its own directory, ports, munge socket and node names: it runs beside `slurm_cluster`.
    Unlike that one it leaves os.environ alone (both may be up in one session): tests pass
    `cluster.env` to what they run.
    """
    missing = helper.missing_binaries()
    if missing:
        pytest.skip(f"{NO_SLURM}; missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    import shutil

    programs = {
        name: shutil.which(f"jobfleet-slurm-{name}")
        for name in ("resume", "suspend", "resume-fail")
    }
    absent = [name for name, path in programs.items() if path is None]
    if absent:
        pytest.fail(f"the power programs are not installed: {', '.join(absent)} (uv sync)")
    _sweep_stale_clusters()
    root = Path(tempfile.mkdtemp(prefix=ELASTIC_PREFIX))
    lock = hold_session_lock(root)
    cluster: SlurmCluster = helper.SlurmCluster(
        cloud_nodes=3,
        cloud_cpus=4,
        spare_nodes=2,
        power_saving=[
            f"ResumeProgram={programs['resume']}",
            f"SuspendProgram={programs['suspend']}",
            f"ResumeFailProgram={programs['resume-fail']}",
            *(f"{key}={value}" for key, value in POWER_SAVING_TIMES.items()),
            "ResumeRate=0",
            "SuspendRate=0",
        ],
    )
    try:
        cluster.start(root)
        helper.write_power_config(cluster)
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        lock.close()
