"""What every `jobfleet` command shares: the ledger option, JSON output, the console.

Nothing here (nor at the top of a command module) imports the ledger, SQLAlchemy or rich:
`jobfleet --help` and `jobfleet version` must start fast, so each command imports what it needs
when it runs (docs/performance.md, "Command-line start-up").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobfleet.core.host.defaults import ENV_VAR

if TYPE_CHECKING:
    from rich.console import Console

    from jobfleet.core.host.ledger import Ledger

F = TypeVar("F", bound=Callable[..., Any])


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


def ledger_option(function: F) -> F:
    """`--ledger URL`: which ledger to use (a SQLite path or a database URL)."""
    return click.option(
        "--ledger",
        "ledger_url",
        envvar=ENV_VAR,
        metavar="URL",
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
