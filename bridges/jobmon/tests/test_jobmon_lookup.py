"""The shipped `jobmon.plugins.jobfleet_*` modules, as Jobmon itself finds and imports them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("jobmon.core", reason="needs the `jobmon` dependency group")

from jobmon.core import cluster_protocol as jobmon_protocol
from jobmon.core.cluster_type import ClusterType

BACKENDS = ["dummy", "sequential", "multiprocess", "slurm", "kubernetes", "mesos"]
BRIDGE = Path(__file__).resolve().parents[1]
ROOT = BRIDGE.parents[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_jobmons_own_lookup_finds_each_module(backend):
    plugin = ClusterType(f"jobfleet_{backend}").plugin
    assert plugin.__name__ == f"jobmon.plugins.jobfleet_{backend}"
    expected = {
        plugin.get_cluster_queue_class: jobmon_protocol.ClusterQueue,
        plugin.get_cluster_distributor_class: jobmon_protocol.ClusterDistributor,
        plugin.get_cluster_worker_node_class: jobmon_protocol.ClusterWorkerNode,
    }
    for hook, protocol in expected.items():
        cls = hook()
        assert protocol in cls.__mro__, (cls, protocol)  # Protocols refuse issubclass()
        assert not getattr(cls, "__abstractmethods__", None), cls.__abstractmethods__
        assert hook() is cls  # built once


def test_a_backend_that_runs_nothing_says_so_by_a_class_attribute():
    classes = {b: ClusterType(f"jobfleet_{b}").cluster_distributor_class for b in BACKENDS}
    assert {b for b, cls in classes.items() if not cls.runs_commands} == {"dummy"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_importing_a_module_is_silent_and_light(backend):
    # Jobmon imports every plugin module in every one of its processes.
    probe = (
        "import sys\n"
        f"import jobmon.plugins.jobfleet_{backend}\n"
        "heavy = [m for m in sys.modules if m.startswith(('jobfleet.core', 'jobfleet.plugins',"
        " 'jobfleet.worker_node', 'jobmon.core', 'pluggy', 'sqlalchemy', 'kubernetes',"
        " 'pymesos'))]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    # -X importtime writes one line per import to stderr; nothing else may be there.
    others = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert others == []


def test_namespaces_stay_namespaces_in_the_source_tree():
    assert not (BRIDGE / "src/jobmon/__init__.py").exists()
    assert not (BRIDGE / "src/jobmon/plugins/__init__.py").exists()
    import jobmon.plugins

    assert getattr(jobmon.plugins, "__file__", None) is None


@pytest.mark.slow
def test_the_wheel_ships_no_namespace_init(tmp_path):
    built = subprocess.run(
        ["uv", "build", "--package", "jobfleet-jobmon", "--wheel", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("jobfleet_jobmon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for backend in BACKENDS:
        assert f"jobmon/plugins/jobfleet_{backend}/__init__.py" in names
    assert "jobfleet/jobmon/__init__.py" in names
    assert "jobfleet/jobmon/py.typed" in names
    for namespace in ("jobmon/__init__.py", "jobmon/plugins/__init__.py", "jobfleet/__init__.py"):
        assert namespace not in names
