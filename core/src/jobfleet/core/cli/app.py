"""The `jobfleet` command group and its commands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from jobfleet.core.cli.common import console, not_utf8, not_utf8_message, print_json
from jobfleet.core.errors import JobfleetError

if TYPE_CHECKING:
    from rich.table import Table

    from jobfleet.core.plugins import PluginInfo, PluginRegistry


def _registry() -> PluginRegistry:
    from jobfleet.core.plugins import default_registry

    return default_registry()


def version_report() -> dict[str, Any]:
    """The core's version and every plugin's, as `jobfleet version --json` prints it."""
    from jobfleet.core import __version__
    from jobfleet.core.plugins import PluginStatus

    registry = _registry()
    plugins = []
    for info in registry.list_plugins():
        entry = info.to_dict()
        if info.status is PluginStatus.OK:
            entry["version_info"] = dict(registry.version_info(info.name))
        plugins.append(entry)
    return {"jobfleet-core": __version__, "python": sys.version.split()[0], "plugins": plugins}


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    _echo_version(version_report())
    ctx.exit()


def _echo_version(report: dict[str, Any]) -> None:
    click.echo(f"jobfleet-core {report['jobfleet-core']} (Python {report['python']})")
    for plugin in report["plugins"]:
        line = f"  {plugin['name']}: {plugin['distribution'] or '?'} {plugin['version'] or '?'}"
        extras = ", ".join(f"{k} {v}" for k, v in plugin.get("version_info", {}).items())
        if extras:
            line += f" ({extras})"
        if plugin["status"] != "ok":
            line += f" [{plugin['status']}: {plugin['error']}]"
        click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version of the core and of every installed backend, then exit.",
)
def cli() -> None:
    """Run shell commands on any cluster through one plugin protocol.

    Backends (sequential, multiprocess, slurm, kubernetes, mesos, …) are plugins found through
    the entry-point group `jobfleet.plugins`; `jobfleet plugins` lists what is installed.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def version(as_json: bool) -> None:
    """Show the version of the core and of every installed backend."""
    report = version_report()
    if as_json:
        print_json(report)
    else:
        _echo_version(report)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(name: str | None, as_json: bool) -> None:
    """List the installed backends and provisioners, or show one plugin and its settings.

    A backend that fails to load is listed as broken with its error; the others still work.
    Set JOBFLEET_DISABLE_PLUGINS=a,b or JOBFLEET_LOAD_PLUGINS=a,b to leave plugins out.
    """
    registry = _registry()
    if name is not None:
        _show_plugin(registry, name, as_json)
        return
    infos = registry.list_plugins()
    if as_json:
        print_json([info.to_dict() for info in infos])
        return
    console().print(_plugins_table(infos))


def _plugins_table(infos: list[PluginInfo]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from jobfleet.core.plugins import PluginStatus

    table = Table(title="jobfleet plugins", title_justify="left")
    for column in ("name", "provides", "distribution", "version", "status"):
        table.add_column(column, no_wrap=column != "status")
    styles = {PluginStatus.OK: "green", PluginStatus.BROKEN: "red", PluginStatus.DISABLED: "yellow"}
    for info in infos:
        status = info.status.value + (f": {info.error}" if info.error else "")
        # As text, never markup: an error message may hold brackets ("[Errno 2] …").
        table.add_row(
            Text(info.name),
            Text(", ".join(info.kinds) or "?"),
            Text(info.distribution or "?"),
            Text(info.version or "?"),
            Text(status, style=styles[info.status]),
        )
    if not infos:
        table.caption = "No backend is installed. Try: pip install jobfleet-multiprocess"
    return table


def _show_plugin(registry: PluginRegistry, name: str, as_json: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from jobfleet.core.plugins import BACKEND, PROVISIONER

    kinds = registry.kinds(name)
    if BACKEND not in kinds and PROVISIONER in kinds:
        _show_provisioner(registry, name, as_json)
        return
    plugin = registry.get_cluster(name)
    options = plugin.setting_options()
    detail = {
        "name": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "module": plugin.module.__name__,
        "queue_class": _qualname(plugin.queue_class),
        "distributor_class": _qualname(plugin.distributor_class),
        "worker_node_class": _qualname(plugin.worker_node_class),
        "provisioner_class": _qualname(registry.get_provisioner(name).provisioner_class)
        if PROVISIONER in kinds
        else None,
        "settings": [
            {
                "field": o.field,
                "option": o.flag,
                "envvar": o.envvar,
                "type": o.type.__name__,
                "default": o.default
                if isinstance(o.default, str | int | float | bool | None)
                else str(o.default),
                "help": o.help,
            }
            for o in options
        ],
    }
    if as_json:
        print_json(detail)
        return
    out = console()
    for key in (
        "name",
        "distribution",
        "version",
        "module",
        "queue_class",
        "distributor_class",
        "worker_node_class",
    ):
        out.print(Text.assemble((key, "bold"), f": {detail[key]}"))
    table = Table(title="settings", title_justify="left")
    for column in ("option", "environment variable", "default", "help"):
        table.add_column(column)
    for o in options:
        table.add_row(Text(o.flag), Text(o.envvar), Text(repr(o.default)), Text(o.help))
    if not options:
        table.caption = "This backend has no settings."
    out.print(table)


def _show_provisioner(registry: PluginRegistry, name: str, as_json: bool) -> None:
    from rich.text import Text

    plugin = registry.get_provisioner(name)
    detail = {
        "name": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "module": plugin.module.__name__,
        "provisioner_class": _qualname(plugin.provisioner_class),
        "settings": [
            {"field": o.field, "option": o.flag, "envvar": o.envvar, "help": o.help}
            for o in plugin.setting_options()
        ],
    }
    if as_json:
        print_json(detail)
        return
    out = console()
    for key in ("name", "distribution", "version", "module", "provisioner_class"):
        out.print(Text.assemble((key, "bold"), f": {detail[key]}"))
    for option in plugin.setting_options():
        out.print(Text(f"  {option.flag} ({option.envvar}): {option.help}"))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; errors jobfleet raises on purpose are printed without a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    for position, arg in enumerate(args, 1):
        shown = not_utf8(arg)
        if shown is not None:
            problem = not_utf8_message(f"Argument {position},", shown)
            click.echo(f"jobfleet: error: {problem}", err=True)
            return 2
    try:
        # Without standalone mode, click returns the code a command exits with (ctx.exit).
        result = cli.main(args=args, prog_name="jobfleet", standalone_mode=False)
    except JobfleetError as exc:
        click.echo(f"jobfleet: error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return result if isinstance(result, int) else 0


from jobfleet.core.cli.inspect_commands import COMMANDS as _INSPECT_COMMANDS  # noqa: E402

for _command in _INSPECT_COMMANDS:
    cli.add_command(_command)

from jobfleet.core.cli.run_commands import COMMANDS as _RUN_COMMANDS  # noqa: E402

for _command in _RUN_COMMANDS:
    cli.add_command(_command)

from jobfleet.core.cli.ui_commands import COMMANDS as _UI_COMMANDS  # noqa: E402

for _command in _UI_COMMANDS:
    cli.add_command(_command)
