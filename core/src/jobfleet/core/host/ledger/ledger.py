"""`Ledger`: an open ledger database, migrated to the newest schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from jobfleet.core.host.ledger import migrate
from jobfleet.core.host.ledger.engine import (
    DEFAULT_BUSY_TIMEOUT,
    READ_ONLY_OPTION,
    create_ledger_engine,
    resolve_url,
    safe_url,
)
from jobfleet.core.host.ledger.errors import LedgerError
from jobfleet.core.host.ledger.models import Event


class Ledger:
    """The host's record of clusters, queues, runs, tasks, instances and events.

    Open it with `Ledger.open(url)`; use `session()` for a transaction that commits when the
    block ends (and rolls back on an exception), `read_session()` for queries. A ledger opened
    with `read_only=True` has only `read_session()`.
    """

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )
        for maker in (self._sessions, self._read_sessions):
            event.listen(maker, "before_flush", _events_are_append_only)

    @property
    def url(self) -> URL:
        return self.engine.url

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden: the only form to show or log."""
        return safe_url(self.engine.url)

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | URL | None = None,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
    ) -> Ledger:
        """Open (creating it if needed) and migrate the ledger at `url`.

        `url` defaults to $JOBFLEET_LEDGER, then to the SQLite file ./.jobfleet/ledger.db; a
        path (no `://`) names a SQLite file. Raises `LedgerError`, with any password hidden,
        when the database cannot be reached or migrated, or belongs to another application.

        `read_only` is for commands that only look: nothing is written through the ledger, and
        a SQLite file the user may only read can be opened. Only a schema older than this
        jobfleet's is migrated first, which needs write access once.
        """
        resolved = resolve_url(url)
        engine = create_ledger_engine(resolved, busy_timeout=busy_timeout, read_only=read_only)
        try:
            if not read_only:
                migrate.upgrade(engine)
            elif migrate.needs_upgrade(engine):
                _upgrade_for_reading(resolved, busy_timeout)
        except migrate.ForeignDatabaseError:
            engine.dispose()
            raise
        except (SQLAlchemyError, LedgerError) as exc:
            engine.dispose()
            raise LedgerError(
                f"The ledger at {safe_url(resolved)} could not be opened: {_describe(exc)}"
            ) from None
        return cls(engine, read_only=read_only)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: committed at the end of the block, rolled back on error."""
        if self.read_only:
            raise LedgerError(f"The ledger at {self.safe_url} was opened read-only.")
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for queries; on SQLite it never waits for (or blocks) writers."""
        with self._read_sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _upgrade_for_reading(url: URL, busy_timeout: float) -> None:
    """Migrate a schema older than this jobfleet's before reading it (the models would not
    match it), through a connection that may write; say so when it may not."""
    engine = create_ledger_engine(url, busy_timeout=busy_timeout)
    try:
        migrate.upgrade(engine)
    except (SQLAlchemyError, LedgerError) as exc:
        raise LedgerError(
            f"its schema is older than this jobfleet's and must be migrated once by a user who "
            f"may write it ({_describe(exc)})"
        ) from None
    finally:
        engine.dispose()


def _describe(exc: BaseException) -> str:
    # The driver's own message, without SQLAlchemy's SQL and parameter dump.
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _events_are_append_only(session: Session, _context: object, _instances: object) -> None:
    # The event log is history: the ORM may add rows to it, never change or remove one.
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, Event) and (obj in session.deleted or session.is_modified(obj)):
            raise LedgerError(
                f"The ledger's event log is append-only; event {obj.id} cannot be changed."
            )
