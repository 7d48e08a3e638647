"""Each plugin's README shows its settings as its settings dataclass defines them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from jobfleet.core.plugins import default_registry
from jobfleet.core.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "settings_tables", ROOT / "scripts" / "settings_tables.py"
)
assert _spec is not None
assert _spec.loader is not None
settings_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings_tables)

READMES = settings_tables.plugin_readmes()


@pytest.mark.parametrize("name", sorted(READMES))
def test_the_readme_settings_table_is_current(name):
    table = settings_table(settings_tables.setting_options_of(default_registry(), name))
    readme = READMES[name]
    assert readme.read_text() == settings_tables.expected_readme(readme, table), (
        f"{readme.relative_to(ROOT)} is out of date: run `uv run python scripts/settings_tables.py`"
    )


def test_every_field_appears_with_its_option_and_default():
    options = default_registry().get_cluster("slurm").setting_options()
    table = settings_table(options)
    for option in options:
        assert f"`{option.flag}`" in table
        assert f"`{option.envvar}`" in table
    assert len(table.splitlines()) == len(options) + 2


def test_a_table_is_inserted_and_then_replaced_in_place(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nIntro.\n")
    first = settings_tables.expected_readme(readme, "| a |\n")
    assert first.endswith(f"## Settings\n\n{settings_tables.START}\n| a |\n{settings_tables.END}\n")
    readme.write_text(first + "\nMore text.\n")
    second = settings_tables.expected_readme(readme, "| b |\n")
    assert "| a |" not in second
    assert "| b |" in second
    assert second.endswith("\nMore text.\n")
