"""The ledger of the reference host: what ran where, in which state, and why.

A SQLAlchemy 2 database (SQLite in WAL mode by default, PostgreSQL for shared use), migrated
by Alembic to the newest schema whenever it is opened. See docs/ledger.md.

The names below are loaded when first used (PEP 562), not when the package is imported: its
light modules (`states`, `errors`, `revisions`, `owners`, `read_only`) must be importable
without SQLAlchemy, which `jobfleet status` of a SQLite ledger never imports
(host/quick_read.py; docs/performance.md, "Command-line start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from jobfleet.core.host.ledger.engine import (
        DEFAULT_PATH,
        ENV_VAR,
        IN_BATCH,
        STDIN_URL,
        in_batches,
        resolve_url,
        safe_url,
    )
    from jobfleet.core.host.ledger.errors import LeaseError, LedgerError, TransitionError
    from jobfleet.core.host.ledger.leases import (
        DEFAULT_LEASE,
        acquire_lease,
        lease_is_live,
        lease_is_orphaned,
        owner_is_gone,
        release_lease,
        renew_lease,
        take_over_lease,
    )
    from jobfleet.core.host.ledger.ledger import Ledger
    from jobfleet.core.host.ledger.models import (
        Array,
        Base,
        Cluster,
        Event,
        Queue,
        Run,
        RunCount,
        Task,
        TaskInstance,
        utcnow,
    )
    from jobfleet.core.host.ledger.states import (
        ACTIVE_STATES,
        FINAL_RUN_STATUSES,
        RETRYABLE_STATES,
        TERMINAL_STATES,
        TRANSITIONS,
        InstanceState,
        RunStatus,
        TaskState,
        check_transition,
    )
    from jobfleet.core.host.ledger.transitions import (
        Change,
        add_instance,
        apply_changes,
        record_event,
        transition,
    )

# Which module of the package defines each name (the imports above, for the type checker).
_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "engine": ("DEFAULT_PATH", "ENV_VAR", "IN_BATCH", "STDIN_URL", "in_batches", "resolve_url",
               "safe_url"),
    "errors": ("LeaseError", "LedgerError", "TransitionError"),
    "leases": ("DEFAULT_LEASE", "acquire_lease", "lease_is_live", "lease_is_orphaned",
               "owner_is_gone", "release_lease", "renew_lease", "take_over_lease"),
    "ledger": ("Ledger",),
    "models": ("Array", "Base", "Cluster", "Event", "Queue", "Run", "RunCount", "Task",
               "TaskInstance", "utcnow"),
    "states": ("ACTIVE_STATES", "FINAL_RUN_STATUSES", "RETRYABLE_STATES", "TERMINAL_STATES",
               "TRANSITIONS", "InstanceState", "RunStatus", "TaskState", "check_transition"),
    "transitions": ("Change", "add_instance", "apply_changes", "record_event", "transition"),
}  # fmt: skip
_MODULE_OF: Final = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_LEASE",
    "DEFAULT_PATH",
    "ENV_VAR",
    "FINAL_RUN_STATUSES",
    "IN_BATCH",
    "RETRYABLE_STATES",
    "STDIN_URL",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Array",
    "Base",
    "Change",
    "Cluster",
    "Event",
    "InstanceState",
    "LeaseError",
    "Ledger",
    "LedgerError",
    "Queue",
    "Run",
    "RunCount",
    "RunStatus",
    "Task",
    "TaskInstance",
    "TaskState",
    "TransitionError",
    "acquire_lease",
    "add_instance",
    "apply_changes",
    "check_transition",
    "in_batches",
    "lease_is_live",
    "lease_is_orphaned",
    "owner_is_gone",
    "record_event",
    "release_lease",
    "renew_lease",
    "resolve_url",
    "safe_url",
    "take_over_lease",
    "transition",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
