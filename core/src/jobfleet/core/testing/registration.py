"""Conformance: the plugin is found through its entry point and what it provides fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.cluster_protocol import (
    ClusterDistributor,
    ClusterQueue,
    ClusterWorkerNode,
    protocol_problems,
)
from jobfleet.core.plugins import ClusterPlugin, PluginRegistry, PluginStatus

# Modules a plugin module must not import at import time: they belong inside its hooks (client
# libraries) or to the host (database, CLI), and every `jobfleet` start would pay for them.
HEAVY_MODULES = ("sqlalchemy", "alembic", "click", "rich", "kubernetes", "pymesos", "psutil")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class RegistrationTests:
    """Subclass with `cluster_name = "<entry point name>"`."""

    cluster_name: str = ""

    @pytest.fixture
    def name(self) -> str:
        if not self.cluster_name:
            raise NotImplementedError(
                "set the class attribute `cluster_name` to the entry point name"
            )
        return self.cluster_name

    @pytest.fixture
    def registry(self) -> PluginRegistry:
        # Blocking variables of the developer's shell must not decide what the kit sees.
        return PluginRegistry(environ={})

    @pytest.fixture
    def plugin(self, registry: PluginRegistry, name: str) -> ClusterPlugin:
        return registry.get_cluster(name)

    def test_found_through_its_entry_point(self, registry: PluginRegistry, name: str) -> None:
        assert name in registry.names()
        info = next(i for i in registry.list_plugins() if i.name == name)
        assert info.status is PluginStatus.OK, info.error
        assert info.distribution, "the entry point must come from an installed distribution"
        assert info.version

    def test_entry_point_names_a_module(self, registry: PluginRegistry, name: str) -> None:
        info = next(i for i in registry.list_plugins() if i.name == name)
        assert ":" not in info.entry_point, (
            "the entry point names the plugin module, not an attribute"
        )

    def test_classes_fit_the_protocols(self, plugin: ClusterPlugin) -> None:
        assert protocol_problems(plugin.queue_class, ClusterQueue) == []
        assert protocol_problems(plugin.distributor_class, ClusterDistributor) == []
        assert protocol_problems(plugin.worker_node_class, ClusterWorkerNode) == []

    def test_import_is_silent_and_light(self, plugin: ClusterPlugin) -> None:
        probe = (
            "import importlib, json, sys\n"
            f"importlib.import_module({plugin.module.__name__!r})\n"
            f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        result = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", "importing a plugin module must print nothing"
        heavy = json.loads(result.stdout)
        assert heavy == [], (
            f"importing {plugin.module.__name__} pulled in {heavy}: import them in the hooks"
        )

    def test_settings_become_options_and_variables(self, plugin: ClusterPlugin, name: str) -> None:
        options = plugin.setting_options()
        flags = [o.flag for o in options]
        assert len(set(flags)) == len(flags)
        for option in options:
            assert option.flag.startswith(f"--{name}-".replace("_", "-"))
            assert option.envvar.startswith(f"JOBFLEET_{name.upper()}_")
            assert option.help
        # Defaults make a valid settings instance, and every default survives a trip through
        # its environment variable.
        defaults = plugin.settings(environ={})
        if plugin.settings_class is None:
            assert defaults is None
            return
        environ = {o.envvar: _as_text(o.default) for o in options}
        assert plugin.settings(environ=environ) == defaults

    def test_settings_options_parse_on_a_command_line(
        self, plugin: ClusterPlugin, tmp_path: Path
    ) -> None:
        pytest.importorskip("click", reason="click is not installed (jobfleet-core[host])")
        import click
        from click.testing import CliRunner

        from jobfleet.core.cli.options import add_setting_options, setting_values

        options = plugin.setting_options()
        seen: dict[str, Any] = {}

        @click.command()
        def command(**params: Any) -> None:
            seen.update(setting_values(options, params))

        add_setting_options(command, options)
        help_text = CliRunner().invoke(command, ["--help"], terminal_width=200).output
        for option in options:
            assert option.flag in help_text
        args = [arg for o in options for arg in _cli_args(o)]
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, result.output
        assert plugin.settings(cli_values=seen) == plugin.settings(environ={})


def _cli_args(option: Any) -> list[str]:
    """Arguments that set an option to its own default (bools as their flag or `--no-` flag)."""
    if option.default is None:
        return []
    if option.type is bool:
        return [option.flag if option.default else "--no-" + option.flag.removeprefix("--")]
    return [option.flag, _as_text(option.default)]
