"""Per-backend settings: a frozen dataclass whose fields become CLI options and env variables.

A plugin declares its settings like this::

    @dataclass(frozen=True)
    class SlurmSettings:
        partition: str | None = setting(None, help="Partition used when a task names none.")
        poll_interval: float = setting(5.0, help="Seconds between two status queries.")

and the core turns each field into the option `--slurm-poll-interval` and the environment
variable `JOBFLEET_SLURM_POLL_INTERVAL`. A value given on the command line wins over the
environment, which wins over the default. The core refuses a field without a default or help
text, or of a type it cannot read from text, so every setting can be set both ways.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobfleet.core.errors import SettingsError

SUPPORTED_TYPES: tuple[type, ...] = (str, int, float, bool, Path)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def setting(default: Any = dataclasses.MISSING, *, help: str) -> Any:
    """A settings field with its default and the help text shown in `--help`."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class SettingOption:
    """One settings field as the command line and the environment see it."""

    cluster: str
    field: str
    type: type
    optional: bool
    default: Any
    help: str

    @property
    def flag(self) -> str:
        """`--<cluster>-<field>`, underscores written as dashes."""
        return f"--{self.cluster}-{self.field}".replace("_", "-")

    @property
    def envvar(self) -> str:
        """`JOBFLEET_<CLUSTER>_<FIELD>` in upper case."""
        return f"JOBFLEET_{self.cluster}_{self.field}".replace("-", "_").upper()

    @property
    def accepted(self) -> str:
        """The forms a text value may take, for help and error messages."""
        forms = {
            bool: "one of 1, true, yes, on, 0, false, no, off",
            int: "a whole number",
            float: "a finite number",
            Path: "a file system path",
            str: "any text",
        }[self.type]
        return forms + (" (or an empty value for none)" if self.optional else "")

    def parse(self, text: str, source: str) -> Any:
        """Read a value given as text in `source` (an option or variable name)."""
        if self.optional and text.strip() == "":
            return None
        try:
            return _PARSERS[self.type](text)
        except ValueError:
            raise SettingsError(
                f"{source}={text!r} is not a valid value for the {self.cluster} setting "
                f"{self.field!r}: expected {self.accepted}."
            ) from None


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_path(text: str) -> Path:
    if not text.strip():
        raise ValueError(text)
    return Path(text)


_PARSERS: Mapping[type, typing.Callable[[str], Any]] = {
    str: str,
    int: lambda text: int(text.strip()),
    float: _parse_float,
    bool: _parse_bool,
    Path: _parse_path,
}


def setting_options(cluster: str, settings_class: type) -> list[SettingOption]:
    """The options of a settings class; raises `SettingsError` naming the first bad field."""
    if not (dataclasses.is_dataclass(settings_class) and isinstance(settings_class, type)):
        raise SettingsError(
            f"The settings of {cluster!r} must be a dataclass, not {settings_class!r}."
        )
    if not settings_class.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise SettingsError(
            f"The settings class {settings_class.__name__} of {cluster!r} must be frozen "
            "(@dataclass(frozen=True)): settings do not change while a host runs."
        )
    try:
        hints = typing.get_type_hints(settings_class)
    except Exception as exc:
        raise SettingsError(
            f"The type annotations of {settings_class.__name__} cannot be resolved: {exc}."
        ) from exc
    return [
        _option(cluster, settings_class, f, hints[f.name])
        for f in dataclasses.fields(settings_class)
    ]


def _option(cluster: str, owner: type, field: dataclasses.Field[Any], hint: Any) -> SettingOption:
    where = f"Setting {owner.__name__}.{field.name} of {cluster!r}"
    help_text = field.metadata.get("help")
    if not isinstance(help_text, str) or not help_text.strip():
        raise SettingsError(
            f"{where} has no help text: declare it with setting(default, help=...)."
        )
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        raise SettingsError(f"{where} has no default: every setting must work without being set.")
    value_type, optional = _unwrap_optional(hint)
    if value_type not in SUPPORTED_TYPES:
        names = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
        raise SettingsError(
            f"{where} has the type {hint!r}, which cannot be read from a command line; "
            f"use one of {names}, optionally `| None`."
        )
    default = field.default
    if default is dataclasses.MISSING:
        default = typing.cast(typing.Callable[[], Any], field.default_factory)()
    return SettingOption(cluster, field.name, value_type, optional, default, help_text.strip())


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) == 1 and len(typing.get_args(hint)) == 2:
            return members[0], True
    return hint, False


def resolve_settings(
    cluster: str,
    settings_class: type,
    cli_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Build the settings instance: command line over environment over defaults.

    `cli_values` maps field names to values already converted (None or absent: not given);
    `environ` defaults to nothing, so a host passes `os.environ` on purpose.
    """
    given = dict(cli_values or {})
    env = environ or {}
    values: dict[str, Any] = {}
    for option in setting_options(cluster, settings_class):
        if given.get(option.field) is not None:
            values[option.field] = given[option.field]
        elif option.envvar in env:
            values[option.field] = option.parse(env[option.envvar], option.envvar)
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(settings_class)})
    if unknown:
        raise SettingsError(f"Unknown {cluster} settings: {', '.join(unknown)}.")
    try:
        return settings_class(**values)
    except (TypeError, ValueError) as exc:  # the plugin's own checks in __post_init__
        raise SettingsError(f"Invalid {cluster} settings: {exc}.") from exc


def settings_table(options: list[SettingOption]) -> str:
    """The options as a Markdown table (option, variable, default, help), for a plugin's README.

    `scripts/settings_tables.py` writes it into each plugin's README and a test checks it is
    current, so the README never drifts from the settings dataclass.
    """
    if not options:
        return "This backend has no settings.\n"
    rows = ["| option | environment variable | default | help |", "|---|---|---|---|"]
    for option in options:
        default = "none" if option.default is None else f"`{option.default}`"
        help_text = option.help.replace("|", "\\|")
        rows.append(f"| `{option.flag}` | `{option.envvar}` | {default} | {help_text} |")
    return "\n".join(rows) + "\n"
