"""The packaging promises of DESIGN §1: a namespace, a light core, plugins that pin the core."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement


def test_jobfleet_is_a_namespace_spanning_the_distributions():
    import jobfleet

    assert getattr(jobfleet, "__file__", None) is None, (
        "no distribution may ship jobfleet/__init__.py"
    )
    parts = {str(path) for path in jobfleet.__path__}
    assert any(p.endswith("core/src/jobfleet") for p in parts)
    assert any(p.endswith("plugins/dummy/src/jobfleet") for p in parts)
    assert any(p.endswith("worker_node/src/jobfleet") for p in parts)


def test_core_without_extras_depends_on_pluggy_alone():
    plain = [Requirement(r) for r in requires("jobfleet-core") or []]
    names = {r.name for r in plain if r.marker is None}
    assert names == {"pluggy"}
    host = {r.name for r in plain if r.marker is not None and "host" in str(r.marker)}
    assert {"click", "rich"} <= host


def test_plugins_pin_the_core_with_both_bounds():
    for name in (
        "jobfleet-dummy",
        "jobfleet-worker-node",
        "jobfleet-multiprocess",
        "jobfleet-sequential",
        "jobfleet-slurm",
    ):
        (core,) = [Requirement(r) for r in requires(name) or [] if r.startswith("jobfleet-core")]
        operators = {spec.operator for spec in core.specifier}
        assert {">=", "<"} <= operators, f"{name} must pin jobfleet-core with explicit bounds"


def test_every_member_ships_py_typed():
    root = Path(__file__).resolve().parents[1]
    packages = [root / "core/src/jobfleet/core", root / "worker_node/src/jobfleet/worker_node"]
    packages += [p / "src/jobfleet/plugins" / p.name for p in (root / "plugins").iterdir()]
    for package in packages:
        assert (package / "py.typed").is_file(), f"{package} has no py.typed"
    # `jobfleet` and `jobfleet.plugins` are namespaces that several distributions fill.
    for namespace in root.glob("**/src/jobfleet"):
        assert not (namespace / "__init__.py").exists(), namespace
        assert not (namespace / "plugins" / "__init__.py").exists(), namespace


def test_core_proper_imports_no_host_library():
    probe = (
        "import json, sys\n"
        "import jobfleet.core.plugins, jobfleet.core.resources, jobfleet.core.queue\n"
        "import jobfleet.core.exit_info, jobfleet.core.settings, jobfleet.core.cluster_protocol\n"
        "host = ('click', 'rich', 'sqlalchemy')\n"
        "print(json.dumps(sorted(m for m in host if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_cli_without_host_extra_says_what_to_install():
    probe = (
        "import sys\n"
        "sys.modules['click'] = None  # as if jobfleet-core was installed without [host]\n"
        "from jobfleet.core.cli import main\n"
        "sys.exit(main(['plugins']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "pip install 'jobfleet-core[host]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_test_helper_modules_have_names_unique_across_the_workspace():
    # Test directories are not packages: helpers beside the tests (slurm_cluster.py,
    # agent_provisioner.py, …) are loaded by path under their bare names into sys.modules, so
    # two with one name in one session hand a suite the other's module (seen: two
    # local_provisioner.py, in the Slurm and Mesos tests).
    root = Path(__file__).resolve().parents[1]
    helpers: dict[str, list[str]] = {}
    for tests in root.glob("**/tests"):
        if ".venv" in tests.parts or not tests.is_dir():
            continue
        for module in tests.glob("*.py"):
            if module.name.startswith("test_") or module.name in ("conftest.py", "__init__.py"):
                continue
            helpers.setdefault(module.stem, []).append(str(module.relative_to(root)))
    clashes = {name: paths for name, paths in helpers.items() if len(paths) > 1}
    assert not clashes, f"helper modules sharing a name: {clashes}"
