"""`hookimpl`, the marker of a plugin's hook functions, without importing pluggy.

A plugin's package `__init__` holds its hooks, and Python runs it before any module of the
package: also before the worker-node class the wrapper imports at every task start (through the
`jobfleet.worker_nodes` entry point). With this marker that costs neither pluggy nor the backend
protocols. It leaves on the function what `pluggy.HookimplMarker("jobfleet")` leaves (the
attribute `jobfleet_impl` holding pluggy's `HookimplOpts`), which the plugin manager reads; a
test compares the two markers.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    _F = TypeVar("_F", bound=Callable[..., object])

PROJECT_NAME = "jobfleet"


def hookimpl(
    function: _F | None = None,
    *,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    tryfirst: bool = False,
    trylast: bool = False,
    specname: str | None = None,
    wrapper: bool = False,
) -> Any:
    """Mark `function` as a hook implementation (`@hookimpl` or `@hookimpl(tryfirst=True)`)."""

    def mark(func: _F) -> _F:
        options = {
            "wrapper": wrapper,
            "hookwrapper": hookwrapper,
            "optionalhook": optionalhook,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": specname,
        }
        setattr(func, PROJECT_NAME + "_impl", options)
        return func

    return mark if function is None else mark(function)
