"""Turning a plugin's settings into click options, and click values back into settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from jobfleet.core.settings import SettingOption

_CLICK_TYPES: Mapping[type, Any] = {
    str: click.STRING,
    int: click.INT,
    float: click.FLOAT,
    Path: click.Path(path_type=Path),
}


def parameter_name(option: SettingOption) -> str:
    """The Python name click gives the option's value (`slurm_poll_interval`)."""
    return f"{option.cluster}_{option.field}".replace("-", "_")


def click_option(option: SettingOption) -> click.Option:
    """One click option; its default is None so that an unset option falls to env and default."""
    shown = f"{option.help} [env: {option.envvar}; default: {option.default!r}]"
    if option.type is bool:
        negative = "--no-" + option.flag.removeprefix("--")
        return click.Option(
            [f"{option.flag}/{negative}", parameter_name(option)], default=None, help=shown
        )
    return click.Option(
        [option.flag, parameter_name(option)],
        type=_CLICK_TYPES[option.type],
        default=None,
        help=shown,
        metavar=option.type.__name__.upper(),
    )


def add_setting_options(command: click.Command, options: Iterable[SettingOption]) -> None:
    """Add every option to a click command (all installed backends' options, like snakemake)."""
    command.params.extend(click_option(option) for option in options)


def setting_values(options: Iterable[SettingOption], params: Mapping[str, Any]) -> dict[str, Any]:
    """The field values a command received, keyed by field name, leaving out unset ones."""
    values = {}
    for option in options:
        value = params.get(parameter_name(option))
        if value is not None:
            values[option.field] = value
    return values
