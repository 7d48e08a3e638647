"""Opening a SQLite ledger file read-only with the stdlib's `sqlite3`, without SQLAlchemy.

The read-only engine of `engine.py` makes its connections here, and so does the SQLAlchemy-free
reader of `jobfleet status` (host/quick_read.py): both look at a file the same way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote


def connect_read_only(database: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection that opens the file read-only (`mode=ro`), so that no write can happen.

    A WAL database is read through its `-shm` index, which SQLite creates beside the file when
    it is missing (the last connection to close removes it). Where it is missing and cannot be
    created (a directory the user may not write) and no `-wal` file shows a writer at work,
    the file is read as immutable: as it is, without locks. Raises `sqlite3.Error` when the
    file cannot be read as a database.
    """
    target = "file:" + quote(str(Path(database).absolute()))

    def attempt(options: str) -> sqlite3.Connection:
        connection = sqlite3.connect(
            f"{target}?{options}", uri=True, timeout=busy_timeout, check_same_thread=False
        )
        try:
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    try:
        return attempt("mode=ro")
    except sqlite3.OperationalError:
        if Path(f"{database}-wal").exists():
            raise
        return attempt("mode=ro&immutable=1")
