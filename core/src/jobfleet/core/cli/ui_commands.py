"""`jobfleet ui`: a read-only web view of the ledger's runs (docs/ui.md)."""

from __future__ import annotations

import contextlib
import sys
from typing import Final

import click

from jobfleet.core.cli.common import json_option, ledger_option

DEFAULT_BIND: Final = "127.0.0.1:8765"  # host/ui/server.py's, without importing it at start-up


@click.command()
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen; port 0 takes any free port. Off loopback a token is required: it "
    "is made at start and printed once, in the URL.",
)
@click.option(
    "--open-without-token",
    "open_access",
    is_flag=True,
    help="Off loopback, serve without a token: anyone who can reach the port sees every run, "
    "task name, command and log. Printed as a warning at start.",
)
@json_option
@ledger_option
def ui(bind: str, open_access: bool, as_json: bool, ledger_url: str | None) -> None:
    """Serve a read-only web view of the ledger: runs, one run, its tasks, one task.

    The run page shows the task instances' states over time, failures grouped by reason,
    the slowest and hungriest attempts, resource adjustments and retries, and plots of
    requested against used memory and runtime and of CPU efficiency. Pages of running runs
    update themselves. Nothing is written to the ledger. Stop with Ctrl-C.

    With --json: one line of JSON (url, ledger, token_required) once listening, for scripts.
    """
    from jobfleet.core.cli.inspect_commands import existing_ledger
    from jobfleet.core.host.ui.server import UiServer

    with existing_ledger(ledger_url) as ledger:
        server = UiServer(ledger, bind=bind, open_access=open_access)
        server.bind_now()
        if as_json:
            print_json_line(server.url, ledger.safe_url, server.token is not None)
        else:
            click.echo(f"jobfleet ui of {ledger.safe_url}: {server.url}")
        if not server.loopback and server.token is None:
            click.secho(
                f"WARNING: jobfleet ui listens on {server.host}:{server.port} WITHOUT A TOKEN: "
                "anyone who can reach it sees every run, command and log of this ledger.",
                err=True,
                fg="red",
                bold=True,
            )
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def print_json_line(url: str, ledger: str, token_required: bool) -> None:
    # One line, so that a script can read it while the server runs.
    import json

    click.echo(json.dumps({"url": url, "ledger": ledger, "token_required": token_required}))


COMMANDS: Final[list[click.Command]] = [ui]
