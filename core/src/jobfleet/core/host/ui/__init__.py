"""`jobfleet ui`: a read-only web view of the ledger's runs (docs/ui.md).

A Starlette application (the `host` extra's, shared with the HTTP channel) served by uvicorn:
pages of runs, one run (timeline, failures by reason, slowest and hungriest tasks, resource
adjustments, plots as server-drawn SVG), its tasks (filtered, sorted and paginated in the
database) and one task (attempts, events, log tails). Every asset ships in this package; the
pages load nothing from the network. Nothing here writes to the ledger: it is opened
read-only.

Imported only by `jobfleet ui` (and its tests): never at the CLI's start-up.
"""

from __future__ import annotations

from jobfleet.core.host.ui.app import create_app
from jobfleet.core.host.ui.server import UiServer, parse_bind

__all__ = ["UiServer", "create_app", "parse_bind"]
