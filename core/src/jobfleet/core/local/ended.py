"""What a local distributor remembers of an instance once it has ended: 16 bytes, not an object.

`get_remote_exit_info` must answer for every id the distributor handed out, as long as it
lives, and a host may ask again and again (the kit's helpers do). An ended instance's
`_Job` (with its id string, its log's `Path` and a dict entry: ~0.5 KiB) was kept for that, so
a host running 10,000 tasks grew by ~5 MiB. What the answer needs is only its returncode (or
that it was killed), the kernel's OOM-kill count when it started, and which log it wrote:
kept here in three packed arrays indexed by the id's counter, which every instance of the
distributor hands out in order from 1.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

_NOT_ENDED = -(2**31)
_KILLED = -(2**31) + 1
_NO_COUNT = -1
_OWN_LOG = 0
"""Log index of an instance whose log is named after its id (a one-shot wrapper's)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """An ended instance as remembered: killed, or finished with `returncode`."""

    killed: bool
    returncode: int | None
    oom_kills_at_start: int | None
    log: Path | None
    """Its wrapper's log, or None where it is named after the id (`own_log` gives it)."""


class EndedRecords:
    """Packed records of ended instances, by the counter of their id (1, 2, ...)."""

    def __init__(self) -> None:
        self._codes = array("i")
        self._oom_counts = array("q")
        self._log_indexes = array("I")
        self._logs: list[Path] = []  # shared logs (a slot worker's), each once
        self._log_index: dict[Path, int] = {}

    def add(
        self,
        number: int,
        *,
        killed: bool,
        returncode: int | None,
        oom_kills_at_start: int | None,
        log: Path | None,
    ) -> None:
        """Remember instance `number` (its id's counter) as ended."""
        missing = number - len(self._codes)
        if missing > 0:  # instances between that have not ended (yet) get placeholders
            self._codes.extend([_NOT_ENDED] * missing)
            self._oom_counts.extend([_NO_COUNT] * missing)
            self._log_indexes.extend([_OWN_LOG] * missing)
        index = number - 1
        if killed or returncode is None:
            self._codes[index] = _KILLED
        else:
            self._codes[index] = max(returncode, _KILLED + 1)
        self._oom_counts[index] = _NO_COUNT if oom_kills_at_start is None else oom_kills_at_start
        self._log_indexes[index] = self._index_of(log)

    def get(self, number: int) -> Ended | None:
        """The record of instance `number`, or None if it has not ended (or never existed)."""
        if not 1 <= number <= len(self._codes):
            return None
        index = number - 1
        code = self._codes[index]
        if code == _NOT_ENDED:
            return None
        count = self._oom_counts[index]
        log_index = self._log_indexes[index]
        return Ended(
            killed=code == _KILLED,
            returncode=None if code == _KILLED else code,
            oom_kills_at_start=None if count == _NO_COUNT else count,
            log=None if log_index == _OWN_LOG else self._logs[log_index - 1],
        )

    def _index_of(self, log: Path | None) -> int:
        if log is None:
            return _OWN_LOG
        index = self._log_index.get(log)
        if index is None:
            self._logs.append(log)
            index = self._log_index[log] = len(self._logs)
        return index
