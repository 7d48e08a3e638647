"""What every `jobfleet` command shares: the ledger option, JSON output, the console.

Nothing here (nor at the top of a command module) imports the ledger, SQLAlchemy or rich:
`jobfleet --help` and `jobfleet version` must start fast, so each command imports what it needs
when it runs (docs/performance.md, "Command-line start-up").
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from jobfleet.core.host.defaults import ENV_VAR

if TYPE_CHECKING:
    from rich.console import Console

    from jobfleet.core.host.ledger import Ledger

F = TypeVar("F", bound=Callable[..., Any])

MAX_ID: Final = 2**63 - 1
"""The largest id the ledger's databases hold (a signed 64-bit integer)."""


def console() -> Console:
    from rich.console import Console

    # Tables must not be cut to 80 columns when the output goes to a file or a pipe.
    return Console(width=None if sys.stdout.isatty() else 160)


def error_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def json_option(function: F) -> F:
    """`--json`: print JSON for scripts instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def not_utf8(value: str) -> str | None:
    """None for UTF-8 text; else the value as typed, its stray bytes shown as `\\xNN`.

    Python hands bytes of an argument (or environment variable) that are not UTF-8 over as
    lone surrogates, which neither the database nor the terminal can take.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def not_utf8_message(what: str, shown: str) -> str:
    return (
        f"{what} {shown!r} is not UTF-8 text: jobfleet keeps commands, names and paths as UTF-8 "
        "text. Rename the file or pass the text in UTF-8."
    )


if TYPE_CHECKING:
    _IdParamType = click.ParamType[int]
    _TextParamType = click.ParamType[str]
    _FloatParamType = click.ParamType[float]
else:  # click before 8.2 has no generic ParamType (the project allows click 8.1)
    _IdParamType = _TextParamType = _FloatParamType = click.ParamType


class LedgerId(_IdParamType):
    """An id of a run or task instance: a whole number the database can hold."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            # The length first: int() of thousands of digits is slow, then refused by Python.
            if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID))):
                self.fail(_bad_id(value), param, ctx)
            number = int(text)
        if not 1 <= number <= MAX_ID:
            self.fail(_bad_id(value), param, ctx)
        return number


class RunRef(_TextParamType):
    """A run: its id, or its name when only one run has it. Digits beyond any id are refused."""

    name = "run"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if text.isascii() and text.isdigit() and (len(text) > 19 or int(text) > MAX_ID):
            self.fail(f"{_bad_id(value)} (a run's name works too)", param, ctx)
        return str(value)


def _bad_id(value: object) -> str:
    shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:40]}…"
    return f"{shown!r} is not an id: ids are whole numbers from 1 to {MAX_ID}"


class Seconds(_FloatParamType):
    """A duration in seconds: a finite number, zero or more (`nan` and `inf` are refused)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:40]!r} is not a number of seconds", param, ctx)
        # float() reads "nan" and "inf"; a wait of either would never end (or end at once).
        if not math.isfinite(number) or number < 0:
            self.fail(
                f"{str(value)[:40]!r} is not a number of seconds: give a finite number, 0 or more",
                param,
                ctx,
            )
        return number


LEDGER_ID: Final = LedgerId()
SECONDS: Final = Seconds()
RUN_REF: Final = RunRef()


def _utf8_ledger(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # Checked here, not only with the arguments: $JOBFLEET_LEDGER reaches it too.
    shown = None if value is None else not_utf8(value)
    if shown is not None:
        raise click.BadParameter(not_utf8_message("The ledger", shown))
    return value


def ledger_option(function: F) -> F:
    """`--ledger URL`: which ledger to use (a SQLite path or a database URL)."""
    return click.option(
        "--ledger",
        "ledger_url",
        envvar=ENV_VAR,
        metavar="URL",
        callback=_utf8_ledger,
        help="The ledger: a SQLite file path or a database URL such as "
        "postgresql+psycopg://user@host/db. Default: ./.jobfleet/ledger.db "
        f"(or ${ENV_VAR}).",
    )(function)


def open_ledger(url: str | None, *, read_only: bool = False) -> Ledger:
    """Open the ledger named by `--ledger` (or its defaults); errors name it without password.

    A command that only reads opens it `read_only`: it then works on a ledger the user may
    only read, and never writes to it.
    """
    from jobfleet.core.host.ledger import Ledger

    return Ledger.open(url, read_only=read_only)
