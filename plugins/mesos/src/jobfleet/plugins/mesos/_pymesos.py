"""pymesos, imported so that it cannot take the host down.

pymesos 0.3.15 does two things at the process level that a host must not suffer:

- importing `pymesos.process` installs its own SIGINT handler (which calls the previous one
  as a function, a `TypeError` when that was `SIG_IGN`), and fails outside the main thread;
- when its I/O thread dies of an exception (an HTTP 4xx at SUBSCRIBE, a malformed stream) it
  calls `_thread.interrupt_main()`, a KeyboardInterrupt in whatever the host's main thread does.

`load()` puts the host's SIGINT handler back after the import, and gives pymesos a `thread`
whose `interrupt_main` does nothing: the distributor sees a dead driver through
`driver.aborted` and starts a new one (with backoff) itself.

A third rough edge: an HTTP error at SUBSCRIBE (401 when the master refuses the credentials)
reaches pymesos' error path, which adds a `str` to the `bytes` body when the body came in
pieces: a `TypeError: can't concat str to bytes` that names neither the status nor the master.
`load()` wraps `Connection.read` so that any exception raised while the response's status is
an error is `MasterRefused(code, master)` instead (the original exception chained).
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

_lock = threading.Lock()
_NOT_REFUSALS = frozenset({200, 307, 503})  # pymesos handles these itself


class MasterRefused(RuntimeError):
    """A master answered the SUBSCRIBE with an HTTP error status (401: credentials refused)."""

    def __init__(self, code: int, master: str) -> None:
        super().__init__(f"the Mesos master {master} answered the subscription with HTTP {code}")
        self.code = code
        self.master = master


def _refusal(connection: Any) -> MasterRefused | None:
    """The HTTP error a pymesos `Connection` received before its stream started, if any."""
    try:
        parser = connection._parser
        if connection._stream_id is not None or not parser.is_headers_complete():
            return None
        code = int(parser.get_status_code())
        host, port = connection.addr
    except Exception:
        return None
    return None if code in _NOT_REFUSALS else MasterRefused(code, f"{host}:{port}")


def _patch_read(process: Any) -> None:
    original = process.Connection.read

    def read(self: Any) -> Any:
        try:
            return original(self)
        except Exception as exc:
            refused = _refusal(self)
            if refused is None:
                raise
            raise refused from exc

    process.Connection.read = read


_loaded: Any = None


def load() -> Any:
    """The `pymesos` module, made safe as above."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        main = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGINT) if main else None
        original = signal.signal
        if not main:
            # pymesos.process calls signal.signal at import, which only the main thread may.
            signal.signal = lambda number, handler: signal.getsignal(number)  # type: ignore[assignment]
        try:
            import pymesos
            import pymesos.process
        finally:
            signal.signal = original
        if main and before is not None:
            signal.signal(signal.SIGINT, before)
        pymesos.process.thread = types.SimpleNamespace(interrupt_main=lambda *args: None)
        _patch_read(pymesos.process)
        _loaded = pymesos
        return pymesos


def take_failure() -> BaseException | None:
    """The exception that ended a pymesos I/O thread last (pymesos keeps it in a module global
    for its SIGINT handler), and forget it."""
    module = load()
    info = getattr(module.process, "_exc_info", None)
    module.process._exc_info = None
    if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], BaseException):
        return info[1]
    return None
