"""What travels over a host channel: task specs one way, events the other.

Both sides may run different releases of jobfleet (the host is upgraded while wrappers from the
old release still run), so every reader here ignores keys it does not know and checks the
types of the keys it does, naming the field that is wrong. A task spec carries the protocol
version it was written for; a reader of another version refuses it rather than guess.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from jobfleet.core.errors import ChannelError, ProtocolVersionError

__all__ = ["PROTOCOL_VERSION", "Event", "EventKind", "TaskSpec"]

PROTOCOL_VERSION: Final = 1


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but `True` is never a task instance id or a byte count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _field_error(what: str, name: str, expected: str, value: object) -> ChannelError:
    return ChannelError(
        f"The {what} field {name!r} must be {expected}, not {_type_name(value)} ({value!r:.80})."
    )


def _check_int(what: str, name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return
    expected = "a non-negative integer" + (" or null" if nullable else "")
    raise _field_error(what, name, expected, value)


def _check_positive(what: str, name: str, value: object, *, nullable: bool = False) -> float | None:
    """A positive finite number as a float (None passes when nullable)."""
    if value is None and nullable:
        return None
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    expected = "a positive number" + (" or null" if nullable else "")
    raise _field_error(what, name, expected, value)


def _check_str(what: str, name: str, value: object, *, nullable: bool = False) -> None:
    if isinstance(value, str) or (value is None and nullable):
        return
    raise _field_error(what, name, "a string" + (" or null" if nullable else ""), value)


def _frozen_environment(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise _field_error("task spec", "environment", "an object of strings", value)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ChannelError(
                "The task spec field 'environment' must map strings to strings, but "
                f"{key!r} maps to {_type_name(item)}."
            )
    # A copy behind a read-only view: the spec stays frozen even if the caller's dict changes.
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything the worker-node wrapper needs to run one task instance.

    `stdout_dir` / `stderr_dir` of None mean "keep no log file" (the wrapper still keeps
    bounded tails for the final report). `memory` (bytes), `runtime` (seconds) and `cores` are
    the limits the wrapper enforces; None means no limit. Types are checked on construction,
    so a host cannot store a spec its wrappers would refuse to read.
    """

    task_instance_id: int
    command: str
    name: str
    run_id: int | None = None
    stdout_dir: str | None = None
    stderr_dir: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)
    memory: int | None = None
    runtime: int | None = None
    cores: float | None = None
    heartbeat_interval: float = 30.0
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        what = "task spec"
        _check_int(what, "task_instance_id", self.task_instance_id)
        _check_str(what, "command", self.command)
        _check_str(what, "name", self.name)
        _check_int(what, "run_id", self.run_id, nullable=True)
        _check_str(what, "stdout_dir", self.stdout_dir, nullable=True)
        _check_str(what, "stderr_dir", self.stderr_dir, nullable=True)
        _check_int(what, "protocol_version", self.protocol_version)
        # A zero limit would kill every task at once; "no limit" is spelled None.
        for name in ("memory", "runtime"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value > 0):
                raise _field_error(what, name, "a positive integer or null", value)
        # Normalise the forms a JSON reader or a caller may hand over (int cores, a plain dict).
        cores = _check_positive(what, "cores", self.cores, nullable=True)
        interval = _check_positive(what, "heartbeat_interval", self.heartbeat_interval)
        object.__setattr__(self, "cores", cores)
        object.__setattr__(self, "heartbeat_interval", interval)
        object.__setattr__(self, "environment", _frozen_environment(self.environment))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, with every field written out."""
        return {
            "protocol_version": self.protocol_version,
            "task_instance_id": self.task_instance_id,
            "command": self.command,
            "name": self.name,
            "run_id": self.run_id,
            "stdout_dir": self.stdout_dir,
            "stderr_dir": self.stderr_dir,
            "environment": dict(self.environment),
            "memory": self.memory,
            "runtime": self.runtime,
            "cores": self.cores,
            "heartbeat_interval": self.heartbeat_interval,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Read a spec written by `to_dict` (or by a host in another language).

        The version is checked first, because a spec of another version may have fields of
        another meaning. Fields with a default may be left out; unknown keys are ignored.
        """
        if not isinstance(data, Mapping):
            raise ChannelError(f"A task spec must be a JSON object, not {_type_name(data)}.")
        for name in _REQUIRED_SPEC_FIELDS:
            if name not in data:
                raise ChannelError(f"The task spec has no {name!r} field, which is required.")
        version = data["protocol_version"]
        _check_int("task spec", "protocol_version", version)
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"The task spec was written for channel protocol version {version}, but this "
                f"worker node speaks version {PROTOCOL_VERSION}. Run the same jobfleet release "
                "on the host and the worker nodes."
            )
        return cls(**{name: data[name] for name in _SPEC_FIELDS if name in data})


_SPEC_FIELDS: Final = tuple(TaskSpec.__dataclass_fields__)
_REQUIRED_SPEC_FIELDS: Final = ("protocol_version", "task_instance_id", "command", "name")


class EventKind(enum.StrEnum):
    """What a wrapper reports about its task instance."""

    RUNNING = "running"
    """The command has started."""
    HEARTBEAT = "heartbeat"
    """The wrapper is alive (sent every `heartbeat_interval` seconds)."""
    FINAL = "final"
    """The one final report: error state, exit record, usage, log tails."""


@dataclass(frozen=True, slots=True)
class Event:
    """One record a wrapper sends to the host.

    `writer` is a token unique to one wrapper run and `sequence` counts that writer's events
    from 0, so `(writer, sequence)` identifies an event: a host that may see an event twice
    (after resuming from an older cursor) drops the repeat by that pair.
    """

    kind: EventKind
    task_instance_id: int
    writer: str
    sequence: int
    time: float
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {
            "kind": self.kind.value,
            "task_instance_id": self.task_instance_id,
            "writer": self.writer,
            "sequence": self.sequence,
            "time": self.time,
            "data": dict(self.data),
        }

    def to_line(self) -> bytes:
        """One compact JSON object and a newline.

        ASCII-only output keeps every newline inside a string escaped, so the only b"\\n" is
        the record's end; NaN and infinity are refused because other JSON readers reject them.
        """
        try:
            text = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ChannelError(
                f"The data of a {self.kind.value} event of task instance "
                f"{self.task_instance_id} is not JSON-ready: {exc}."
            ) from exc
        return text.encode("ascii") + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Event:
        """Read one record written by `to_line`; unknown keys are ignored."""
        try:
            data = json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ChannelError(f"An event record is not valid JSON: {exc}.") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> Event:
        """Read the form `to_dict` writes, checking each field."""
        if not isinstance(data, Mapping):
            raise ChannelError(f"An event must be a JSON object, not {_type_name(data)}.")
        for name in ("kind", "task_instance_id", "writer", "sequence", "time"):
            if name not in data:
                raise ChannelError(f"The event has no {name!r} field, which is required.")
        what = "event"
        _check_int(what, "task_instance_id", data["task_instance_id"])
        _check_str(what, "writer", data["writer"])
        _check_int(what, "sequence", data["sequence"])
        if not _is_number(data["time"]):
            raise _field_error(what, "time", "a number", data["time"])
        payload = data.get("data", {})
        if not isinstance(payload, Mapping):
            raise _field_error(what, "data", "an object", payload)
        return cls(
            kind=parse_kind(data["kind"]),
            task_instance_id=data["task_instance_id"],
            writer=data["writer"],
            sequence=data["sequence"],
            time=float(data["time"]),
            data=payload,
        )


def parse_kind(value: object) -> EventKind:
    """The `EventKind` named by `value`, or a ChannelError listing the known kinds."""
    if isinstance(value, str) and value in _KINDS:
        return EventKind(value)
    known = ", ".join(_KINDS)
    raise ChannelError(f"{value!r} is not an event kind this release knows. Known kinds: {known}.")


_KINDS: Final = tuple(kind.value for kind in EventKind)
