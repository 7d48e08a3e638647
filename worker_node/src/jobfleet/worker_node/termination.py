"""The final exit record, also written to a termination-log file (`$JOBFLEET_TERMINATION_LOG`).

Kubernetes keeps the first 4096 bytes of the file named by a container's
`terminationMessagePath` in the pod's status: a backend that points the variable there reads
how the task ended even when the final report never reached the host. The record is the final
report's compact JSON, shortened to fit (the log tails first, then the message).
"""

from __future__ import annotations

import json
import os

from jobfleet.core.wrapper import (
    TERMINATION_LOG_LIMIT,
    TERMINATION_LOG_STARTED,
    TERMINATION_LOG_VARIABLE,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the wrapper's start path
    from typing import Any

    from jobfleet.core.channel import FinalReport


def termination_record(report: FinalReport, limit: int = TERMINATION_LOG_LIMIT) -> bytes:
    """The report as compact JSON of at most `limit` bytes (tails and text cut as needed)."""
    data: dict[str, Any] = report.to_dict()
    text = _dump(data)
    if len(text) <= limit:
        return text
    # Drop what the host has elsewhere (log paths) and what is long (tails), then shorten text.
    for name in ("stdout_tail", "stderr_tail"):
        data[name] = ""
    data["usage"] = _without_details(data.get("usage"))
    text = _dump(data)
    for name in ("message",):
        if len(text) > limit:
            excess = len(text) - limit + 16
            data[name] = _cut(str(data.get(name) or ""), excess)
            text = _dump(data)
    exit_record = data.get("exit")
    if len(text) > limit and isinstance(exit_record, dict):
        exit_record["message"] = _cut(str(exit_record.get("message") or ""), len(text) - limit + 16)
        text = _dump(data)
    if len(text) > limit:  # only the verdict is sure to fit
        text = _dump({"error_state": data["error_state"], "exit": None})
    return text


def write_termination_log(report: FinalReport) -> None:
    """Write the record where `$JOBFLEET_TERMINATION_LOG` says; nothing when it is unset.

    Never raises: the channel's report is the one that counts, this is a fallback.
    """
    _write(termination_record(report))


def mark_started() -> None:
    """Say in the termination log that the wrapper runs (`TERMINATION_LOG_STARTED`), so that a
    wrapper killed before its final record is told from one that exited on its own."""
    _write(TERMINATION_LOG_STARTED.encode())


def _write(data: bytes) -> None:
    path = os.environ.get(TERMINATION_LOG_VARIABLE)
    if not path:
        return
    try:
        with open(path, "wb") as log:
            log.write(data)
    except (OSError, ValueError):
        pass


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _without_details(usage: object) -> object:
    if isinstance(usage, dict):
        return {**usage, "usage_str": None}
    return usage


def _cut(text: str, excess: int) -> str:
    """`text` shortened by about `excess` bytes (UTF-8), marked as cut."""
    raw = text.encode()
    keep = max(0, len(raw) - excess - 3)
    return raw[:keep].decode(errors="ignore") + "…"
