"""Where the host looks for its ledger unless told: names that need no database library.

The command line shows them in its help, which must not import SQLAlchemy (see
docs/performance.md, "Command-line start-up").
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

ENV_VAR: Final = "JOBFLEET_LEDGER"
"""The environment variable naming the ledger (a SQLite path or a database URL)."""
DEFAULT_PATH: Final = Path(".jobfleet") / "ledger.db"
"""The SQLite ledger used when neither `--ledger` nor $JOBFLEET_LEDGER names one."""
DEFAULT_BUSY_TIMEOUT: Final = 30.0
"""Seconds a ledger connection waits for a SQLite lock held by another process."""
