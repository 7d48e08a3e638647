"""The newest schema revision this jobfleet knows, read from the migration files' text.

Reading a handful of small files costs far less than importing Alembic's script machinery, and
needs no SQLAlchemy: `migrate` compares a ledger's revision with it before deciding to import
Alembic, and `host/quick_read.py` before reading a SQLite ledger with the stdlib alone.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Final

# `revision = "0004"` and `down_revision: str | None = "0003"` (or None) in a migration file.
_REVISION_RE: Final = re.compile(r"^revision(?:\s*:[^=\n]*)?\s*=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN_RE: Final = re.compile(
    r"^down_revision(?:\s*:[^=\n]*)?\s*=\s*(?:[\"']([^\"']+)[\"']|None)\s*$", re.M
)


@cache
def known_revisions() -> dict[str, str | None]:
    """Each migration's revision and the revision it follows, read from the files' text.

    A file the pattern cannot read is left out, which makes `quick_head` give up (None).
    """
    found: dict[str, str | None] = {}
    versions = resources.files("jobfleet.core.host.ledger") / "migrations" / "versions"
    for entry in versions.iterdir():
        if not entry.name.endswith(".py"):
            continue
        source = entry.read_text(encoding="utf-8")
        revision, down = _REVISION_RE.search(source), _DOWN_RE.search(source)
        if revision is not None and down is not None:
            found[revision[1]] = down[1]
    return found


def quick_head() -> str | None:
    """The newest revision read from the migration files; None when they do not form one line
    (then only Alembic can say, and the caller asks it)."""
    revisions = known_revisions()
    heads = set(revisions) - set(revisions.values())
    return next(iter(heads)) if len(heads) == 1 else None
