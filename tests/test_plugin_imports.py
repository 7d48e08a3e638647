"""A plugin depends on jobfleet-core alone: no plugin imports the worker node or another plugin.

Read from the sources with `ast`, so an import inside a function counts as much as one at the
top; this is what lets a third party copy any built-in backend as a template.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(path.parent.name for path in ROOT.glob("plugins/*/pyproject.toml"))


def imported_modules(source: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


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
        for module in imported_modules(source)
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
