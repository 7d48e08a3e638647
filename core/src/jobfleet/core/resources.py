"""The resource model every backend and host shares.

A request reaches a queue as loose keyword values (`memory="4G"`, `runtime="1h30m"`, `cores=2`,
`gpus="a100:1"`, plus free keys such as `account`). This module reads them into one canonical
form, `ResourceRequest`, in fixed units:

- cores: a float (fractions allowed), written as an int when whole;
- memory: bytes, an int (written in a canonical dict as an exact size with a unit, "4G");
- runtime: seconds, an int;
- gpus: a whole count, with an optional GPU type.

`QueueLimits` holds a queue's maxima and defaults in the same units, read from the queue's
parameters. `validate` says whether a request fits a queue, `coerce` makes it fit and records each
change as an `Adjustment` so that a user can see it.

Every unreadable value raises `ResourceError`, naming the field, the value and the accepted forms.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final

from jobfleet.core.errors import ResourceError

__all__ = [
    "CANONICAL_FIELDS",
    "CLAMPED_TO_MAXIMUM",
    "FILLED_FROM_DEFAULT",
    "GIB",
    "KIB",
    "LIMITED_FIELDS",
    "MAX_CORES",
    "MAX_GPUS",
    "MAX_MEMORY",
    "MAX_PACK_TASKS",
    "MAX_RUNTIME",
    "MIB",
    "MIN_TASK_MEMORY",
    "PACK",
    "PIB",
    "RAISED_TO_MINIMUM",
    "TIB",
    "Adjustment",
    "PackRequest",
    "QueueLimits",
    "ResourceRequest",
    "check_task_memory",
    "coerce",
    "format_memory",
    "format_runtime",
    "memory_text",
    "parse_cores",
    "parse_gpus",
    "parse_memory",
    "parse_pack",
    "parse_preemptible",
    "parse_runtime",
    "validate",
]

KIB: Final = 1024
MIB: Final = 1024**2
GIB: Final = 1024**3
TIB: Final = 1024**4
PIB: Final = 1024**5

# Beyond these a value is a typo (a missing unit, an extra zero), not a request: no cluster has
# a petabyte of memory per task, a year-long wall time, or more cores or GPUs than these.
MAX_MEMORY: Final = PIB
MAX_RUNTIME: Final = 366 * 86400
MAX_CORES: Final = 100_000
MAX_GPUS: Final = 1024
# Below this, a task's memory is a typo too ("1B", a unit forgotten the other way): a process
# needs more than a mebibyte just to start, so such a task would be killed at once. Any size
# parses (`parse_memory("100B")`); the host refuses task requests and queue memory below it.
MIN_TASK_MEMORY: Final = MIB

# The request keys jobfleet reads; any other key passes through untouched.
CANONICAL_FIELDS: Final = ("cores", "memory", "runtime", "gpus", "gpu_type", "queue")
# The fields a queue limits and fills with defaults.
LIMITED_FIELDS: Final = ("cores", "memory", "runtime", "gpus")

CLAMPED_TO_MAXIMUM: Final = "clamped to the queue maximum"
RAISED_TO_MINIMUM: Final = "raised to the queue minimum"
FILLED_FROM_DEFAULT: Final = "filled from the queue default"

MEMORY_FORMS: Final = (
    "a size with a unit, such as '512M', '4G', '1.5T', '4GiB', '300MB', '1024K' or '100B' "
    "(every unit is binary: K, KB and KiB all mean 1024 bytes, as Slurm reads them)"
)
RUNTIME_FORMS: Final = (
    "seconds as a number (90 or '90'), a duration such as '90s', '15m', '2h', '1d', '1h30m' "
    "or '1.5h', or a Slurm time such as '30:00' (M:S), '1:30:00' (H:M:S), '1-12' (D-H), "
    "'1-12:30' (D-H:M) or '1-00:00:00' (D-H:M:S)"
)
CORES_FORMS: Final = "a positive number of cores, such as 1, 4, 0.5 or '2'"
GPUS_FORMS: Final = (
    "a whole number of GPUs, 0 or more, optionally with a type: 2, '2', 'a100:2' (TYPE:N) "
    "or 'gpu:a100:2' (Slurm gres)"
)
GPU_TYPE_FORMS: Final = "a GPU type name such as 'a100' or 'v100-32gb'"
QUEUE_FORMS: Final = "the name of a queue, as a non-empty string"
PREEMPTIBLE_FORMS: Final = "true or false (also yes/no, on/off, 1/0, in any letter case)"
PREEMPTIBLE: Final = "preemptible"
"""The request key saying a task may run on preemptible (spot) capacity. It stays an extra key
(no queue limits it); backends that know such capacity read `ResourceRequest.preemptible`."""
PACK: Final = "pack"
"""The request key asking a batch backend to run several short task instances of one array in
one backend job, one after another (docs/resources.md, "Packing"). An extra key like
`preemptible`: no queue limits it, and being part of the request it takes part in the host's
grouping of instances into arrays."""
MAX_PACK_TASKS: Final = 10_000
PACK_FORMS: Final = (
    "a mapping such as {max_tasks: 50, max_runtime: 10m} (max_tasks: a whole number from 1 to "
    f"{MAX_PACK_TASKS}; max_runtime, optional: a runtime such as 10m), the same as text "
    "'max_tasks=50,max_runtime=10m', or off/false for no packing"
)
_PACK_KEYS: Final = ("max_tasks", "max_runtime")

# ASCII only: "\d" would otherwise accept digits of every script.
_DECIMAL: Final = r"(?:\d+(?:\.\d+)?|\.\d+)"
_DECIMAL_RE: Final = re.compile(_DECIMAL, re.ASCII)
_SIGNED_DECIMAL_RE: Final = re.compile(rf"-?{_DECIMAL}", re.ASCII)
_MEMORY_RE: Final = re.compile(
    rf"(?P<sign>-?)(?P<number>{_DECIMAL})\s*(?P<unit>[A-Za-z]*)", re.ASCII
)
_SLURM_TIME_RE: Final = re.compile(r"(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})", re.ASCII)
_DURATION_PART_RE: Final = re.compile(
    rf"\s*(?P<number>{_DECIMAL})\s*(?P<unit>[A-Za-z]+)\s*", re.ASCII
)
_COUNT_RE: Final = re.compile(r"-?\d+", re.ASCII)
_GPU_TYPE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")

_MEMORY_UNITS: Final[Mapping[str, int]] = {
    "b": 1,
    **{
        spelling: size
        for letter, size in (("k", KIB), ("m", MIB), ("g", GIB), ("t", TIB), ("p", PIB))
        for spelling in (letter, f"{letter}b", f"{letter}ib")
    },
}

_RUNTIME_UNITS: Final[Mapping[str, int]] = {
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
}


# --- numbers -------------------------------------------------------------------------------

# No resource value is longer; a longer text is garbage, and too long to repeat in a message.
_MAX_TEXT: Final = 100


class _Elided:
    """Stands in, in a message, for a value too long to repeat (or too long for `repr`)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


def _error(field: str, value: object, accepted: str, problem: str) -> ResourceError:
    """A `ResourceError` whose message stays short whatever the value."""
    shown: object = value
    # repr() of an int over 4300 digits raises; one over 256 bits is absurd anyway.
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        shown = _Elided(f"<an integer of {value.bit_length()} bits>")
    elif isinstance(value, str) and len(value) > _MAX_TEXT:
        shown = _Elided(f"{value[:40]!r}… ({len(value)} characters)")
    return ResourceError(field, shown, accepted, problem)


def _text(value: str, field: str, accepted: str) -> str:
    """The stripped text of a value, which must be neither blank nor absurdly long."""
    text = value.strip()
    if not text:
        raise _error(field, value, accepted, "is empty")
    if len(text) > _MAX_TEXT:
        raise _error(field, value, accepted, f"is longer than {_MAX_TEXT} characters")
    return text


def _exact_number(value: object, field: str, accepted: str) -> Fraction:
    """Read a number given as a number or a decimal string, exactly (no float rounding)."""
    if isinstance(value, str):
        return _decimal_text(value, field, accepted)
    # bool is an int subclass, but `cores=True` is a mistake, never a count of one.
    if isinstance(value, bool):
        raise _error(field, value, accepted, "is a bool, not a number")
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(field, value, accepted, "is not a finite number")
        return Fraction(value)
    problem = f"is a {type(value).__name__}, not a number or a string"
    raise _error(field, value, accepted, problem)


def _decimal_text(value: str, field: str, accepted: str) -> Fraction:
    text = _text(value, field, accepted)
    if not _SIGNED_DECIMAL_RE.fullmatch(text):
        raise _error(field, value, accepted, "is not a number")
    return Fraction(text)


def _largest_allowed(limit: str) -> str:
    return f"is more than {limit}, the most any request may ask for"


# --- memory --------------------------------------------------------------------------------


def parse_memory(value: object, *, field: str = "memory", bare_unit: str | None = None) -> int:
    """Read a memory size and return it in bytes.

    Accepts a number with a unit: "512M", "4G", "1.5T", "4GiB", "300MB", "1024K", "100B",
    "2 GiB", in any letter case. Every unit is binary, as Slurm reads them: K, KB and KiB all
    mean 1024 bytes, M means 1024**2, and so on through G, T and P.

    A bare number (4, 4.0 or "4") is ambiguous: Slurm reads MiB, Jobmon GiB. It is rejected
    unless the caller names `bare_unit` (such as "G" for a host that sends integer GiB), in
    which case it is read in that unit. The result is rounded to whole bytes and must be at
    least one byte and at most `MAX_MEMORY`.
    """
    bare_size = _bare_unit_size(bare_unit)
    accepted = (
        MEMORY_FORMS if bare_unit is None else f"{MEMORY_FORMS}, or a bare number of {bare_unit}"
    )
    amount = _memory_amount(value, field, accepted, bare_size)
    return _checked_bytes(amount, value, field, accepted)


def _bare_unit_size(bare_unit: str | None) -> int | None:
    if bare_unit is None:
        return None
    size = _MEMORY_UNITS.get(bare_unit.strip().lower())
    if size is None:
        raise ValueError(
            f"The bare memory unit {bare_unit!r} is not a unit jobfleet knows; "
            "use one of B, K, M, G, T or P."
        )
    return size


def _memory_amount(value: object, field: str, accepted: str, bare_size: int | None) -> Fraction:
    """The size in bytes before rounding, with the sign kept so that it can be reported."""
    if isinstance(value, str):
        number, unit = _memory_text(value, field, accepted)
    else:
        number, unit = _exact_number(value, field, accepted), ""
    if number < 0:
        raise _error(field, value, accepted, "is negative")
    if unit:
        return number * _MEMORY_UNITS[unit.lower()]
    if bare_size is None:
        problem = "has no unit, which is ambiguous (Slurm reads MiB, Jobmon GiB)"
        raise _error(field, value, accepted, problem)
    return number * bare_size


def _memory_text(value: str, field: str, accepted: str) -> tuple[Fraction, str]:
    text = _text(value, field, accepted)
    match = _MEMORY_RE.fullmatch(text)
    if match is None:
        raise _error(field, value, accepted, "is not a memory size")
    unit = match["unit"]
    if unit and unit.lower() not in _MEMORY_UNITS:
        raise _error(field, value, accepted, f"has an unknown unit {unit!r}")
    number = Fraction(match["number"])
    return (-number if match["sign"] else number), unit


def _checked_bytes(amount: Fraction, value: object, field: str, accepted: str) -> int:
    size = round(amount)
    if size < 1:
        raise _error(field, value, accepted, "must be at least one byte")
    if size > MAX_MEMORY:
        raise _error(field, value, accepted, _largest_allowed(format_memory(MAX_MEMORY)))
    return size


def check_task_memory(size: int, *, field: str = "memory", value: object = None) -> None:
    """Refuse a task's memory (or a queue's memory limit) below `MIN_TASK_MEMORY`."""
    if size < MIN_TASK_MEMORY:
        floor = format_memory(MIN_TASK_MEMORY)
        raise _error(
            field,
            format_memory(size) if value is None else value,
            f"at least {floor} (MIN_TASK_MEMORY), such as 512M or 4G",
            f"is below {floor}, the least memory a task may have: a process needs more just to "
            "start, so it would be killed at once",
        )


def format_memory(size: int) -> str:
    """A short binary-unit label for a size in bytes, for messages: 1610612736 -> "1.5G"."""
    for suffix, unit in (("P", PIB), ("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if size >= unit:
            return f"{_short_number(size / unit)}{suffix}"
    return f"{size}B"


def memory_text(size: int) -> str:
    """A size in bytes written exactly, in the largest binary unit that divides it.

    4294967296 -> "4G", 1610612736 -> "1536M", 1000 -> "1000B". This is how a canonical dict
    carries memory: unambiguous, readable, and read back to the same number of bytes.
    """
    for suffix, unit in (("P", PIB), ("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}B"


def _short_number(number: float) -> str:
    return f"{number:.2f}".rstrip("0").rstrip(".")


# --- runtime -------------------------------------------------------------------------------


def parse_runtime(value: object, *, field: str = "runtime") -> int:
    """Read a wall-time limit and return it in whole seconds.

    Accepts a number of seconds (90, 1.5, "90"), a duration with units ("90s", "15m", "2h",
    "1d", "1h30m", "2d12h", "1.5h"; units largest first, each once), or a Slurm time:
    "30:00" (M:S), "1:30:00" (H:M:S), "1-12" (D-H), "1-12:30" (D-H:M), "1-00:00:00" (D-H:M:S).

    Unlike Slurm, which reads a bare number as minutes, jobfleet follows Jobmon and reads it as
    seconds. The result is rounded up to whole seconds and must be at least one second and at
    most `MAX_RUNTIME`.
    """
    amount = _runtime_amount(value, field)
    if amount < 0:
        raise _error(field, value, RUNTIME_FORMS, "is negative")
    seconds = math.ceil(amount)
    if seconds < 1:
        raise _error(field, value, RUNTIME_FORMS, "must be at least one second")
    if seconds > MAX_RUNTIME:
        raise _error(field, value, RUNTIME_FORMS, _largest_allowed("366d"))
    return seconds


def _runtime_amount(value: object, field: str) -> Fraction:
    if not isinstance(value, str):
        return _exact_number(value, field, RUNTIME_FORMS)
    text = _text(value, field, RUNTIME_FORMS)
    seconds = _runtime_text(text, field, value)
    # A leading minus in front of an otherwise readable time is a negative time, worth its
    # own message; anything else ("--5") is simply not a time.
    if seconds is None and text.startswith("-"):
        positive = _runtime_text(text[1:], field, value)
        if positive is not None:
            return -positive
    if seconds is None:
        raise _error(field, value, RUNTIME_FORMS, "is not a duration")
    return seconds


def _runtime_text(text: str, field: str, value: str) -> Fraction | None:
    """Seconds in `text`, or None when it has none of the accepted shapes."""
    if _DECIMAL_RE.fullmatch(text):
        return Fraction(text)
    slurm = _SLURM_TIME_RE.fullmatch(text)
    if slurm is not None:
        return Fraction(_slurm_seconds(slurm["days"], slurm["clock"], field, value))
    return _duration_seconds(text)


def _slurm_seconds(days: str | None, clock: str, field: str, value: str) -> int:
    parts = [int(part) for part in clock.split(":")]
    if days is None:
        # M:S or H:M:S; a single number never gets here (it is bare seconds).
        hours, minutes, seconds = [0, *parts] if len(parts) == 2 else parts
        bounded = {"minutes": minutes if len(parts) == 3 else 0, "seconds": seconds}
        whole_days = 0
    else:
        hours, minutes, seconds = [*parts, 0, 0][:3]
        bounded = {"hours": hours, "minutes": minutes, "seconds": seconds}
        whole_days = int(days)
    _check_clock_ranges(bounded, field, value)
    return ((whole_days * 24 + hours) * 60 + minutes) * 60 + seconds


def _check_clock_ranges(bounded: Mapping[str, int], field: str, value: str) -> None:
    # The leading field of a clock may be large ("90:00" is 90 minutes); the ones after it
    # must stay in range, so that a typo such as "1:75:00" is caught rather than guessed at.
    ceilings = {"hours": 24, "minutes": 60, "seconds": 60}
    for unit, number in bounded.items():
        if number >= ceilings[unit]:
            problem = f"has {number} {unit}, which must be below {ceilings[unit]} in that place"
            raise _error(field, value, RUNTIME_FORMS, problem)


def _duration_seconds(text: str) -> Fraction | None:
    """Seconds in "1h30m"-style text, or None. Units go largest first, each at most once."""
    total, position, previous_unit = Fraction(0), 0, math.inf
    while position < len(text):
        part = _DURATION_PART_RE.match(text, position)
        if part is None:
            return None
        unit = _RUNTIME_UNITS.get(part["unit"].lower())
        if unit is None or unit >= previous_unit:
            return None
        total += Fraction(part["number"]) * unit
        position, previous_unit = part.end(), unit
    return total if position else None


def format_runtime(seconds: int) -> str:
    """A short label for a number of seconds, for messages: 5400 -> "1h30m", 0 -> "0s"."""
    parts = []
    remaining = int(seconds)
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts) or "0s"


# --- cores and GPUs ------------------------------------------------------------------------


def parse_cores(value: object, *, field: str = "cores") -> float:
    """Read a number of cores: positive, fractions allowed (0.5), at most `MAX_CORES`."""
    number = _exact_number(value, field, CORES_FORMS)
    if number < 0:
        raise _error(field, value, CORES_FORMS, "is negative")
    if number == 0:
        raise _error(field, value, CORES_FORMS, "must be more than zero")
    if number > MAX_CORES:
        raise _error(field, value, CORES_FORMS, _largest_allowed(str(MAX_CORES)))
    return float(number)


def parse_gpus(value: object, *, field: str = "gpus") -> tuple[int, str | None]:
    """Read a GPU request as (count, type or None).

    Accepts a whole count, 0 or more (2, "2"), a typed count "a100:2" (TYPE:N), or Slurm's
    gres form "gpu:a100:2"; "gpu:2" is Slurm's untyped form and gives no type.
    """
    if not isinstance(value, str):
        return _gpu_count(value, field, value), None
    text = _text(value, field, GPUS_FORMS)
    *kinds, count_text = text.split(":")
    if len(kinds) == 2 and kinds[0].strip().lower() == "gpu":
        kinds = kinds[1:]
    if len(kinds) > 1:
        raise _error(field, value, GPUS_FORMS, "is not a GPU request")
    kind = kinds[0].strip() if kinds else None
    if kind is not None and kind.lower() == "gpu":
        kind = None
    if kind is not None:
        _check_gpu_type(kind, field, value, GPUS_FORMS)
    return _gpu_count(count_text.strip(), field, value), kind


def _gpu_count(count: object, field: str, value: object) -> int:
    if isinstance(count, str) and not _COUNT_RE.fullmatch(count):
        raise _error(field, value, GPUS_FORMS, "is not a GPU request")
    number = _exact_number(count, field, GPUS_FORMS)
    if number.denominator != 1:
        raise _error(field, value, GPUS_FORMS, "is not a whole number")
    if number < 0:
        raise _error(field, value, GPUS_FORMS, "is negative")
    if number > MAX_GPUS:
        raise _error(field, value, GPUS_FORMS, _largest_allowed(str(MAX_GPUS)))
    return int(number)


def _check_gpu_type(kind: str, field: str, value: object, accepted: str) -> None:
    # A type must hold a letter: "2:2" is a typo, not a GPU model called "2".
    if not _GPU_TYPE_RE.fullmatch(kind) or not any(char.isalpha() for char in kind):
        raise _error(field, value, accepted, f"has {kind!r}, which is not a GPU type")


def _parse_gpu_type(value: object, field: str = "gpu_type") -> str:
    if not isinstance(value, str):
        problem = f"is a {type(value).__name__}, not a string"
        raise _error(field, value, GPU_TYPE_FORMS, problem)
    text = _text(value, field, GPU_TYPE_FORMS)
    _check_gpu_type(text, field, value, GPU_TYPE_FORMS)
    return text


def parse_preemptible(value: object, *, field: str = PREEMPTIBLE) -> bool:
    """Read the `preemptible` flag: a bool, 0 or 1, or a word such as "true" or "no"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
    raise _error(field, value, PREEMPTIBLE_FORMS, "is not a yes or no")


@dataclass(frozen=True)
class PackRequest:
    """How many task instances one backend job may run one after another (`max_tasks`), and
    how long their runtimes may add up to (`max_runtime`, seconds; None: no bound)."""

    max_tasks: int
    max_runtime: int | None = None

    def to_dict(self) -> dict[str, int]:
        """The canonical form written into a request (runtime in seconds)."""
        values = {"max_tasks": self.max_tasks}
        if self.max_runtime is not None:
            values["max_runtime"] = self.max_runtime
        return values


def parse_pack(value: object, *, field: str = PACK) -> PackRequest | None:
    """Read a `pack` request; None when it says no packing (off, false, no).

    A mapping `{max_tasks: 50, max_runtime: "10m"}`, or the same as text
    "max_tasks=50,max_runtime=10m" (the command line's form). Unknown or repeated keys, a
    missing `max_tasks` and values out of range are refused, naming the key.
    """
    if value is False or (isinstance(value, str) and value.strip().lower() in _PACK_OFF):
        return None
    if isinstance(value, str):
        entries = _pack_text_entries(value, field)
    elif isinstance(value, Mapping):
        entries = dict(value)
    else:
        problem = f"is a {type(value).__name__}, not a mapping or text"
        raise _error(field, value, PACK_FORMS, problem)
    unknown = sorted(str(key) for key in entries if key not in _PACK_KEYS)
    if unknown:
        problem = f"has the key {unknown[0]!r}, which is not one of {', '.join(_PACK_KEYS)}"
        raise _error(field, value, PACK_FORMS, problem)
    if entries.get("max_tasks") is None:
        raise _error(field, value, PACK_FORMS, "has no max_tasks")
    count = entries["max_tasks"]
    if isinstance(count, str) and not _COUNT_RE.fullmatch(count.strip()):
        raise _error(field, value, PACK_FORMS, f"has max_tasks {count!r}, not a whole number")
    number = _exact_number(count, f"{field}.max_tasks", PACK_FORMS)
    if number.denominator != 1 or not 1 <= number <= MAX_PACK_TASKS:
        problem = f"has max_tasks {count!r}, not a whole number from 1 to {MAX_PACK_TASKS}"
        raise _error(field, value, PACK_FORMS, problem)
    limit = entries.get("max_runtime")
    runtime = None if limit is None else parse_runtime(limit, field=f"{field}.max_runtime")
    return PackRequest(int(number), runtime)


_PACK_OFF: Final = frozenset({"off", "false", "no", "none"})


def _pack_text_entries(value: str, field: str) -> dict[str, str]:
    text = _text(value, field, PACK_FORMS)
    entries: dict[str, str] = {}
    for part in text.split(","):
        key, equals, item = part.partition("=")
        key = key.strip()
        if not equals or not key or not item.strip():
            problem = f"has {part.strip()!r}, which is not KEY=VALUE"
            raise _error(field, value, PACK_FORMS, problem)
        if key in entries:
            raise _error(field, value, PACK_FORMS, f"gives {key} twice")
        entries[key] = item.strip()
    return entries


def _parse_queue(value: object, field: str = "queue") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(field, value, QUEUE_FORMS, "is not a queue name")
    return value


def _format_number(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _format_value(name: str, value: float | None) -> str:
    """A field's canonical value as a person reads it."""
    if value is None:
        return "nothing"
    if name.endswith("memory"):
        return format_memory(int(value))
    if name.endswith("runtime"):
        return format_runtime(int(value))
    return _format_number(value)


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceRequest:
    """One task's resources in canonical units; `parse` builds it from loose values.

    Built directly, the fields are checked and normalised with the same parsers (a bare
    memory number is read as bytes, the canonical unit). `extra` holds every other key
    (account, constraint, project, stdout, …) exactly as given, unchecked.
    """

    cores: float | None = None
    memory: int | None = None
    runtime: int | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    queue: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        gpus, gpu_type = self._checked_gpus()
        values: dict[str, Any] = {
            "cores": _maybe(parse_cores, self.cores),
            "memory": None if self.memory is None else parse_memory(self.memory, bare_unit="B"),
            "runtime": _maybe(parse_runtime, self.runtime),
            "gpus": gpus,
            "gpu_type": gpu_type,
            "queue": _maybe(_parse_queue, self.queue),
            "extra": MappingProxyType(dict(self.extra)),
        }
        clashes = sorted(set(self.extra) & set(CANONICAL_FIELDS))
        if clashes:
            raise ValueError(
                f"ResourceRequest.extra holds {', '.join(clashes)}, which are fields of their "
                "own; pass them as fields instead."
            )
        for name, value in values.items():
            # Frozen: normalised values are written once, here, past the frozen guard.
            object.__setattr__(self, name, value)

    def _checked_gpus(self) -> tuple[int | None, str | None]:
        gpu_type = _maybe(_parse_gpu_type, self.gpu_type)
        if self.gpus is None:
            return None, gpu_type
        count, kind = parse_gpus(self.gpus)
        if kind is not None and gpu_type is not None and kind != gpu_type:
            problem = f"names the GPU type {kind!r}, but gpu_type says {gpu_type!r}"
            raise _error("gpus", self.gpus, "one GPU type, given once", problem)
        return count, kind or gpu_type

    @classmethod
    def parse(
        cls, mapping: Mapping[str, Any], *, bare_memory_unit: str | None = None
    ) -> ResourceRequest:
        """Read a request from loose values; keys other than the canonical ones pass through.

        A canonical key whose value is None counts as absent (hosts send None for "not asked
        for"); other keys are kept as given, None included. A bare memory number is read in
        `bare_memory_unit`, and rejected when that is None.
        """
        given = {key: mapping[key] for key in CANONICAL_FIELDS if mapping.get(key) is not None}
        memory = given.get("memory")
        if memory is not None:
            memory = parse_memory(memory, bare_unit=bare_memory_unit)
        extra = {key: value for key, value in mapping.items() if key not in CANONICAL_FIELDS}
        return cls(
            cores=given.get("cores"),
            memory=memory,
            runtime=given.get("runtime"),
            gpus=given.get("gpus"),
            gpu_type=given.get("gpu_type"),
            queue=given.get("queue"),
            extra=extra,
        )

    @property
    def preemptible(self) -> bool:
        """Whether the task may run on preemptible (spot) capacity: the extra key
        `preemptible`, read with `parse_preemptible` (absent or None: False)."""
        value = self.extra.get(PREEMPTIBLE)
        return False if value is None else parse_preemptible(value)

    @property
    def pack(self) -> PackRequest | None:
        """The packing the task allows: the extra key `pack`, read with `parse_pack` (absent,
        None or off: no packing)."""
        value = self.extra.get(PACK)
        return None if value is None else parse_pack(value)

    def to_dict(self, *, bare_memory_unit: str | None = None) -> dict[str, Any]:
        """The canonical JSON-ready dict: canonical fields first, then extra keys as given.

        Canonical fields that are None are left out. Memory is written as an exact size with
        a unit ("1536M"), because a bare number would be ambiguous when the dict is read
        again; a caller whose host speaks bare numbers (Jobmon: GiB) passes `bare_memory_unit`
        and gets a number in that unit instead. Either way the dict reads back unchanged with
        the same `bare_memory_unit`.
        """
        canonical = {
            "cores": None if self.cores is None else _whole_or_float(self.cores),
            "memory": None if self.memory is None else _memory_out(self.memory, bare_memory_unit),
            "runtime": self.runtime,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "queue": self.queue,
        }
        result = {key: value for key, value in canonical.items() if value is not None}
        result.update(self.extra)
        return result


def _memory_out(size: int, bare_memory_unit: str | None) -> str | int | float:
    unit = _bare_unit_size(bare_memory_unit)
    if unit is None:
        return memory_text(size)
    return _whole_or_float(size / unit)


def _maybe(parser: Any, value: Any) -> Any:
    return None if value is None else parser(value)


def _whole_or_float(number: float) -> int | float:
    return int(number) if number.is_integer() else number


# --- queue limits --------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueLimits:
    """A queue's maxima, minimum cores and defaults, in canonical units; None means no limit."""

    max_cores: float | None = None
    max_memory: int | None = None
    max_runtime: int | None = None
    max_gpus: int | None = None
    min_cores: float | None = None
    default_cores: float | None = None
    default_memory: int | None = None
    default_runtime: int | None = None
    default_gpus: int | None = None

    def __post_init__(self) -> None:
        for name in self._keys():
            value = getattr(self, name)
            if value is not None:
                # Frozen: normalised values are written once, here, past the frozen guard.
                object.__setattr__(self, name, _limit_value(name, value, bare_memory_unit="B"))
        self._check_consistent()

    @staticmethod
    def _keys() -> tuple[str, ...]:
        return tuple(limit.name for limit in dataclasses.fields(QueueLimits))

    @classmethod
    def from_parameters(
        cls, parameters: Mapping[str, Any], *, bare_memory_unit: str | None = None
    ) -> QueueLimits:
        """Read the limit keys of a queue's parameters; other keys belong to the backend.

        Memory values carry units ("64G") unless `bare_memory_unit` says how to read a bare
        number. A bad value raises `ResourceError` naming its key, such as "max_memory".
        """
        values: dict[str, Any] = {
            key: _limit_value(key, parameters[key], bare_memory_unit)
            for key in cls._keys()
            if parameters.get(key) is not None
        }
        return cls(**values)

    def bounds(self, name: str) -> tuple[float | None, float | None, float | None]:
        """(minimum, maximum, default) for one of `LIMITED_FIELDS`."""
        table: dict[str, tuple[float | None, float | None, float | None]] = {
            "cores": (self.min_cores, self.max_cores, self.default_cores),
            "memory": (None, self.max_memory, self.default_memory),
            "runtime": (None, self.max_runtime, self.default_runtime),
            "gpus": (None, self.max_gpus, self.default_gpus),
        }
        return table[name]

    def _check_consistent(self) -> None:
        for name in LIMITED_FIELDS:
            minimum, maximum, default = self.bounds(name)
            _check_order(f"default_{name}", default, f"max_{name}", maximum, name)
            _check_order(f"min_{name}", minimum, f"max_{name}", maximum, name)
            _check_order(f"min_{name}", minimum, f"default_{name}", default, name)


def _limit_value(key: str, value: object, bare_memory_unit: str | None) -> float | int:
    if key.endswith("memory"):
        return parse_memory(value, field=key, bare_unit=bare_memory_unit)
    if key.endswith("runtime"):
        return parse_runtime(value, field=key)
    if key.endswith("cores"):
        return parse_cores(value, field=key)
    count, kind = parse_gpus(value, field=key)
    if kind is not None:
        problem = "names a GPU type, which a queue limit cannot"
        raise _error(key, value, "a whole number of GPUs, 0 or more", problem)
    return count


def _check_order(
    low_key: str, low: float | None, high_key: str, high: float | None, name: str
) -> None:
    if low is None or high is None or low <= high:
        return
    shown_low, shown_high = _format_value(name, low), _format_value(name, high)
    raise _error(
        low_key,
        shown_low,
        f"a value no larger than {high_key} ({shown_high})",
        f"is larger than the queue's {high_key} of {shown_high}",
    )


# --- validation and coercion ---------------------------------------------------------------


@dataclass(frozen=True)
class Adjustment:
    """One change coercion made to a request, so that a user can be shown it."""

    field: str
    requested: int | float | None
    granted: int | float | None
    reason: str

    def __str__(self) -> str:
        granted = _format_value(self.field, self.granted)
        if self.requested is None:
            return f"The {self.field} request was missing and was {self.reason} ({granted})."
        requested = _format_value(self.field, self.requested)
        return f"The {self.field} request of {requested} was {self.reason} ({granted})."

    def violation(self, *, will_fit: bool = False) -> str:
        """The limit this adjustment answers, as a clause: "memory 128G is above … of 64G".

        With `will_fit`, the clause also says which value will be used instead.
        """
        requested = _format_value(self.field, self.requested)
        granted = _format_value(self.field, self.granted)
        below = self.reason == RAISED_TO_MINIMUM
        side = "below the queue minimum" if below else "above the queue maximum"
        clause = f"{self.field} {requested} is {side} of {granted}"
        return f"{clause}, so {granted} will be used" if will_fit else clause


def coerce(
    request: ResourceRequest, limits: QueueLimits
) -> tuple[ResourceRequest, list[Adjustment]]:
    """Fit a request to a queue: clamp to the maxima, raise to the minima, fill the defaults.

    Returns the fitted request and one `Adjustment` per changed field, in field order.
    """
    adjustments = [
        adjustment
        for name in LIMITED_FIELDS
        if (adjustment := _fit(name, getattr(request, name), limits)) is not None
    ]
    changes: dict[str, Any] = {adjustment.field: adjustment.granted for adjustment in adjustments}
    return replace(request, **changes), adjustments


def _fit(name: str, requested: float | None, limits: QueueLimits) -> Adjustment | None:
    minimum, maximum, default = limits.bounds(name)
    if requested is None:
        if default is None:
            return None
        return Adjustment(name, None, default, FILLED_FROM_DEFAULT)
    if maximum is not None and requested > maximum:
        return Adjustment(name, requested, maximum, CLAMPED_TO_MAXIMUM)
    if minimum is not None and requested < minimum:
        return Adjustment(name, requested, minimum, RAISED_TO_MINIMUM)
    return None


def validate(
    request: ResourceRequest,
    limits: QueueLimits,
    *,
    strict: bool,
    required: Iterable[str] = (),
) -> tuple[bool, str]:
    """Say whether a request can run on a queue, Jobmon's way.

    A required resource that is missing and has no queue default makes it invalid in both
    modes. A value outside the limits makes it invalid when `strict`; otherwise it is valid and
    the message says how it will be coerced. A request that fits gives (True, "").
    """
    coerced, adjustments = coerce(request, limits)
    present = coerced.to_dict()
    missing = [name for name in required if present.get(name) is None]
    refits = [adjustment for adjustment in adjustments if adjustment.reason != FILLED_FROM_DEFAULT]
    message = " ".join(filter(None, (_missing_text(missing), _refit_text(refits, strict))))
    return not missing and not (strict and refits), message


def _missing_text(missing: list[str]) -> str:
    if not missing:
        return ""
    them = "them" if len(missing) > 1 else "it"
    return (
        f"The request has no value for {', '.join(missing)}, which the queue requires, "
        f"and the queue has no default for {them}."
    )


def _refit_text(refits: list[Adjustment], strict: bool) -> str:
    if not refits:
        return ""
    clauses = "; ".join(adjustment.violation(will_fit=not strict) for adjustment in refits)
    if strict:
        return f"The request does not fit the queue: {clauses}."
    return f"The request will be coerced to fit the queue: {clauses}."
