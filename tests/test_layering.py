"""How jobfleet's parts may import each other, checked by reading their imports with `ast`.

- A plugin depends on jobfleet-core alone: no plugin imports the worker node or another plugin,
  so a third party can copy any built-in backend as a template.
- The click commands are presentation only: the SQL lives in host modules (queries, kills,
  queues, ledger), so no module of the CLI imports SQLAlchemy.
- The steps of the distributor service import each other in one direction only, and never the
  service class.

An import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import jobfleet.core.cli
import jobfleet.core.host.service

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(path.parent.name for path in ROOT.glob("plugins/*/pyproject.toml"))
CLI = Path(jobfleet.core.cli.__file__).parent
SERVICE = Path(jobfleet.core.host.service.__file__).parent
SERVICE_PACKAGE = "jobfleet.core.host.service"


def imported_modules(source: str) -> set[str]:
    """The absolute module names a module's source imports (`from a.b import c` gives a.b
    and a.b.c: c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_import_reader_sees_every_form_of_import() -> None:
    source = (
        "import sqlalchemy.orm\n"
        "from sqlalchemy import select\n"
        "def f():\n"
        "    import json\n"  # inside a function counts too
    )
    assert {"sqlalchemy.orm", "sqlalchemy", "sqlalchemy.select", "json"} <= imported_modules(source)


def test_no_cli_module_imports_sqlalchemy() -> None:
    modules = sorted(CLI.rglob("*.py"))
    assert {"run_commands.py", "inspect_commands.py"} <= {path.name for path in modules}
    offenders = {
        path.name: sorted(
            name
            for name in imported_modules(path.read_text())
            if name.split(".")[0] == "sqlalchemy"
        )
        for path in modules
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_service_steps_import_each_other_without_a_circle() -> None:
    paths = {f"{SERVICE_PACKAGE}.{p.stem}": p for p in SERVICE.glob("*.py") if p.stem != "__init__"}
    assert {
        "context",
        "lease",
        "kills",
        "status",
        "reports",
        "triage",
        "submission",
        "retries",
    } <= {name.rpartition(".")[2] for name in paths}
    graph = {}
    for module, path in paths.items():
        found = imported_modules(path.read_text())
        # The package re-exports the service class: importing it would circle through core.py.
        assert SERVICE_PACKAGE not in found, f"{module} imports the package"
        graph[module] = found & paths.keys()
    core = f"{SERVICE_PACKAGE}.core"
    assert [module for module, imports in graph.items() if core in imports] == []
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"the service's modules import in a circle: {error.args[1]}") from None


# -- plugins --------------------------------------------------------------------------------


def forbidden_for(plugin: str, module: str) -> bool:
    if module == "jobfleet.worker_node" or module.startswith("jobfleet.worker_node."):
        return True
    parts = module.split(".")
    return parts[:2] == ["jobfleet", "plugins"] and len(parts) > 2 and parts[2] != plugin


def test_every_plugin_is_found():
    assert {"dummy", "multiprocess", "sequential", "slurm"} <= set(PLUGINS)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_imports_only_the_core_and_itself(plugin):
    sources = sorted((ROOT / "plugins" / plugin / "src").rglob("*.py"))
    assert sources, f"no sources found for {plugin}"
    offending = {
        f"{source.relative_to(ROOT)}: {module}"
        for source in sources
        for module in imported_modules(source.read_text())
        if forbidden_for(plugin, module)
    }
    assert not offending, "plugins must import jobfleet.core only:\n" + "\n".join(sorted(offending))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("jobfleet.worker_node.locate", True),
        ("jobfleet.worker_node", True),
        ("jobfleet.plugins.multiprocess.pool", True),
        ("jobfleet.plugins.sequential.settings", False),
        ("jobfleet.core.local.pool", False),
    ],
)
def test_the_rule_itself(module, forbidden):
    assert forbidden_for("sequential", module) is forbidden
