"""jobfleet core: cluster protocols, plugin discovery, resource model, conformance kit."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # the worker-node wrapper imports this package before every task
    from typing import Any


def __getattr__(name: str) -> Any:
    # Computed on first use: importlib.metadata costs ~25 ms to import, and the worker-node
    # wrapper, which imports this package around every task, never needs the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("jobfleet-core")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
