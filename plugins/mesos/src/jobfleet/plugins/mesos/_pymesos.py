"""pymesos, imported so that it cannot take the host down.

pymesos 0.3.15 does two things at the process level that a host must not suffer:

- importing `pymesos.process` installs its own SIGINT handler (which calls the previous one
  as a function, a `TypeError` when that was `SIG_IGN`), and fails outside the main thread;
- when its I/O thread dies of an exception (an HTTP 4xx at SUBSCRIBE, a malformed stream) it
  calls `_thread.interrupt_main()`, a KeyboardInterrupt in whatever the host's main thread does.

`load()` puts the host's SIGINT handler back after the import, and gives pymesos a `thread`
whose `interrupt_main` does nothing: the distributor sees a dead driver through
`driver.aborted` and starts a new one (with backoff) itself.
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

_lock = threading.Lock()
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
