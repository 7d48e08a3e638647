"""The `jobfleet` command line (part of the reference host: `pip install jobfleet-core[host]`)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jobfleet` console script."""
    try:
        from jobfleet.core.cli.app import run
    except ImportError as exc:
        # The core installs without the host's libraries; say what to install, not a traceback.
        sys.stderr.write(
            f"jobfleet: the command line needs the host extra ({exc.name or exc} is missing). "
            "Install it with: pip install 'jobfleet-core[host]'\n"
        )
        return 2
    return run(argv)
