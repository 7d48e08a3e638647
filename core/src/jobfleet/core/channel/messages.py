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
from types import MappingProxyType

from jobfleet.core.errors import ChannelError, ProtocolVersionError
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord
from jobfleet.core.frozen import Frozen

# Plain classes rather than dataclasses, and typing only for the type checker: the worker-node
# wrapper imports this module before every task (see jobfleet.core.frozen).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Final, Self, TypeVar

    _T = TypeVar("_T")

__all__ = [
    "PROTOCOL_VERSION",
    "Event",
    "EventKind",
    "FinalReport",
    "HeartbeatReport",
    "Report",
    "RunningReport",
    "TaskSpec",
    "UsageReport",
    "read_report",
]

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


class TaskSpec(Frozen):
    """Everything the worker-node wrapper needs to run one task instance.

    `stdout_dir` / `stderr_dir` of None mean "keep no log file" (the wrapper still keeps
    bounded tails for the final report). `memory` (bytes), `runtime` (seconds) and `cores` are
    the limits the wrapper enforces; None means no limit. Types are checked on construction,
    so a host cannot store a spec its wrappers would refuse to read.
    """

    _fields = (
        "task_instance_id",
        "command",
        "name",
        "run_id",
        "run_token",
        "stdout_dir",
        "stderr_dir",
        "environment",
        "memory",
        "runtime",
        "cores",
        "heartbeat_interval",
        "protocol_version",
    )
    __slots__ = _fields
    _unhashed = frozenset({"environment"})

    task_instance_id: int
    command: str
    name: str
    run_id: int | None
    run_token: str | None
    """The host's token of the run: the wrapper puts it in every report, and the host
    refuses reports without its run's token (None: a host that keeps no token)."""
    stdout_dir: str | None
    stderr_dir: str | None
    environment: Mapping[str, str]
    memory: int | None
    runtime: int | None
    cores: float | None
    heartbeat_interval: float
    protocol_version: int

    def __init__(
        self,
        task_instance_id: int,
        command: str,
        name: str,
        run_id: int | None = None,
        run_token: str | None = None,
        stdout_dir: str | None = None,
        stderr_dir: str | None = None,
        environment: Mapping[str, str] | None = None,
        memory: int | None = None,
        runtime: int | None = None,
        cores: float | None = None,
        heartbeat_interval: float = 30.0,
        protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        what = "task spec"
        _check_int(what, "task_instance_id", task_instance_id)
        _check_str(what, "command", command)
        _check_str(what, "name", name)
        _check_int(what, "run_id", run_id, nullable=True)
        _check_str(what, "run_token", run_token, nullable=True)
        _check_str(what, "stdout_dir", stdout_dir, nullable=True)
        _check_str(what, "stderr_dir", stderr_dir, nullable=True)
        _check_int(what, "protocol_version", protocol_version)
        # A zero limit would kill every task at once; "no limit" is spelled None.
        for field_name, value in (("memory", memory), ("runtime", runtime)):
            if value is not None and not (_is_int(value) and value > 0):
                raise _field_error(what, field_name, "a positive integer or null", value)
        put = object.__setattr__
        put(self, "task_instance_id", task_instance_id)
        put(self, "command", command)
        put(self, "name", name)
        put(self, "run_id", run_id)
        put(self, "run_token", run_token)
        put(self, "stdout_dir", stdout_dir)
        put(self, "stderr_dir", stderr_dir)
        # Normalise the forms a JSON reader or a caller may hand over (int cores, a plain dict).
        put(self, "environment", _frozen_environment({} if environment is None else environment))
        put(self, "memory", memory)
        put(self, "runtime", runtime)
        put(self, "cores", _check_positive(what, "cores", cores, nullable=True))
        put(
            self,
            "heartbeat_interval",
            _check_positive(what, "heartbeat_interval", heartbeat_interval),
        )
        put(self, "protocol_version", protocol_version)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, with every field written out."""
        return {
            "protocol_version": self.protocol_version,
            "task_instance_id": self.task_instance_id,
            "command": self.command,
            "name": self.name,
            "run_id": self.run_id,
            "run_token": self.run_token,
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


_SPEC_FIELDS: Final = TaskSpec._fields
_REQUIRED_SPEC_FIELDS: Final = ("protocol_version", "task_instance_id", "command", "name")


class EventKind(enum.StrEnum):
    """What a wrapper reports about its task instance."""

    RUNNING = "running"
    """The command has started."""
    HEARTBEAT = "heartbeat"
    """The wrapper is alive (sent every `heartbeat_interval` seconds)."""
    FINAL = "final"
    """The one final report: error state, exit record, usage, log tails."""


# Reports: what the data of each kind of event says. The wrapper builds them; a host reads them
# back through `Event.report`. Every field but a final report's error state may be left out, so
# a writer of an older release (or another language) that knows fewer fields is still read.


def _object(what: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ChannelError(f"A {what} must be a JSON object, not {_type_name(value)}.")
    return value


def _known_fields(cls: type[Frozen], data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `cls` that `data` has; unknown keys are left behind."""
    return {name: data[name] for name in cls._fields if name in data}


def _check_amount(what: str, name: str, value: object) -> float | None:
    """A non-negative finite number, or None."""
    if value is None:
        return None
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    raise _field_error(what, name, "a non-negative number or null", value)


def _check_text(what: str, name: str, value: object) -> str:
    """A string; null reads as the empty string."""
    _check_str(what, name, value, nullable=True)
    return "" if value is None else str(value)


def _check_distributor_id(what: str, value: object) -> str | None:
    """The backend's id as a string: some backends number their jobs."""
    if value is None or isinstance(value, str):
        return value
    if _is_int(value):
        return str(value)
    raise _field_error(what, "distributor_id", "a string or null", value)


def _check_choice(what: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if not (isinstance(value, str) and value in choices):
        raise _field_error(what, name, f"one of {', '.join(choices)}", value)


_ERROR_STATES: Final = tuple(state.value for state in ErrorState)
_EXIT_REASONS: Final = tuple(reason.value for reason in ExitReason)


def _exit_record(value: object) -> ExitRecord:
    """An `ExitRecord` read from its `to_dict` form, checking each field."""
    what = "exit record"
    data = _object(what, value)
    if "reason" not in data:
        raise ChannelError("The exit record has no 'reason' field, which is required.")
    _check_choice(what, "reason", data["reason"], _EXIT_REASONS)
    exit_code = data.get("exit_code")
    if exit_code is not None and not _is_int(exit_code):
        raise _field_error(what, "exit_code", "an integer or null", exit_code)
    _check_int(what, "signal", data.get("signal"), nullable=True)
    core_dumped = data.get("core_dumped", False)
    if not isinstance(core_dumped, bool):
        raise _field_error(what, "core_dumped", "true or false", core_dumped)
    _check_str(what, "raw_state", data.get("raw_state"), nullable=True)
    return ExitRecord(
        ExitReason(data["reason"]),
        exit_code=exit_code,
        signal=data.get("signal"),
        core_dumped=core_dumped,
        raw_state=data.get("raw_state"),
        message=_check_text(what, "message", data.get("message")),
    )


class _Report(Frozen):
    """What the report classes share: their JSON form, read and written field by field."""

    __slots__ = ()
    _what: ClassVar[str]
    """How messages name the report."""
    _required: ClassVar[tuple[str, ...]] = ()
    """The fields a reader refuses the report without."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: an event's data (a final report's `usage`)."""
        return {name: _json_ready(getattr(self, name)) for name in self._fields}

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Read the JSON form; unknown keys are ignored, and a wrong value is named."""
        fields = _known_fields(cls, _object(cls._what, data))
        for name in cls._required:
            if name not in fields:
                raise ChannelError(f"The {cls._what} has no {name!r} field, which is required.")
        return cls(**fields)


def _json_ready(value: object) -> object:
    """A field's JSON form: an enum's value, a nested record's dict, anything else as it is."""
    if isinstance(value, enum.Enum):
        return value.value
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if to_dict is not None else value


class UsageReport(_Report):
    """What a task used, as the wrapper (or the backend's worker node) measured it.

    `maxrss` in bytes, `cpu` and `wallclock` in seconds, `usage_str` a JSON text of details for
    people; None where nothing was measured.
    """

    _fields = ("maxrss", "cpu", "wallclock", "usage_str")
    __slots__ = _fields
    _what: ClassVar[str] = "usage"
    maxrss: int | None
    cpu: float | None
    wallclock: float | None
    usage_str: str | None

    def __init__(
        self,
        maxrss: int | None = None,
        cpu: float | None = None,
        wallclock: float | None = None,
        usage_str: str | None = None,
    ) -> None:
        what = self._what
        peak = _check_amount(what, "maxrss", maxrss)
        _check_str(what, "usage_str", usage_str, nullable=True)
        put = object.__setattr__
        put(self, "maxrss", None if peak is None else int(peak))
        put(self, "cpu", _check_amount(what, "cpu", cpu))
        put(self, "wallclock", _check_amount(what, "wallclock", wallclock))
        put(self, "usage_str", usage_str)


class RunningReport(_Report):
    """The command has started: where, under which pids, and where its logs go."""

    _fields = (
        "hostname",
        "pid",
        "wrapper_pid",
        "distributor_id",
        "stdout_path",
        "stderr_path",
    )
    __slots__ = _fields
    kind: ClassVar[EventKind] = EventKind.RUNNING
    _what: ClassVar[str] = "running report"
    hostname: str | None
    pid: int | None
    """The command's pid (it leads its own process group)."""
    wrapper_pid: int | None
    distributor_id: str | None
    stdout_path: str | None
    stderr_path: str | None

    def __init__(
        self,
        hostname: str | None = None,
        pid: int | None = None,
        wrapper_pid: int | None = None,
        distributor_id: str | int | None = None,
        stdout_path: str | None = None,
        stderr_path: str | None = None,
    ) -> None:
        what = self._what
        _check_str(what, "hostname", hostname, nullable=True)
        _check_int(what, "pid", pid, nullable=True)
        _check_int(what, "wrapper_pid", wrapper_pid, nullable=True)
        distributor = _check_distributor_id(what, distributor_id)
        _check_str(what, "stdout_path", stdout_path, nullable=True)
        _check_str(what, "stderr_path", stderr_path, nullable=True)
        put = object.__setattr__
        put(self, "hostname", hostname)
        put(self, "pid", pid)
        put(self, "wrapper_pid", wrapper_pid)
        put(self, "distributor_id", distributor)
        put(self, "stdout_path", stdout_path)
        put(self, "stderr_path", stderr_path)


class HeartbeatReport(_Report):
    """The wrapper is alive; `rss` is the task tree's memory at the last sample (bytes)."""

    _fields = ("rss",)
    __slots__ = _fields
    kind: ClassVar[EventKind] = EventKind.HEARTBEAT
    _what: ClassVar[str] = "heartbeat report"
    rss: int | None

    def __init__(self, rss: int | None = None) -> None:
        _check_int(self._what, "rss", rss, nullable=True)
        object.__setattr__(self, "rss", rss)


class FinalReport(_Report):
    """How the task ended: the one report a wrapper sends last, durably.

    `error_state` is the only required field: the backend's verdict (Jobmon's letters), with
    `message` for people. `exit` is the structured exit record and `usage` what the task used;
    both are None when the command never ran. The tails are the last bytes of each stream,
    decoded; the paths are its log files (None when the spec asked for none).
    """

    _fields = (
        "error_state",
        "message",
        "exit",
        "usage",
        "stdout_tail",
        "stderr_tail",
        "stdout_path",
        "stderr_path",
        "distributor_id",
        "hostname",
    )
    __slots__ = _fields
    kind: ClassVar[EventKind] = EventKind.FINAL
    _what: ClassVar[str] = "final report"
    _required: ClassVar[tuple[str, ...]] = ("error_state",)
    error_state: ErrorState
    message: str
    exit: ExitRecord | None
    usage: UsageReport | None
    stdout_tail: str
    stderr_tail: str
    stdout_path: str | None
    stderr_path: str | None
    distributor_id: str | None
    hostname: str | None

    def __init__(
        self,
        error_state: ErrorState | str,
        message: str = "",
        exit: ExitRecord | Mapping[str, Any] | None = None,
        usage: UsageReport | Mapping[str, Any] | None = None,
        stdout_tail: str = "",
        stderr_tail: str = "",
        stdout_path: str | None = None,
        stderr_path: str | None = None,
        distributor_id: str | int | None = None,
        hostname: str | None = None,
    ) -> None:
        what = self._what
        _check_choice(what, "error_state", error_state, _ERROR_STATES)
        texts = [
            _check_text(what, name, value)
            for name, value in (
                ("message", message),
                ("stdout_tail", stdout_tail),
                ("stderr_tail", stderr_tail),
            )
        ]
        if exit is not None and not isinstance(exit, ExitRecord):
            exit = _nested(what, "exit", _exit_record, exit)
        if usage is not None and not isinstance(usage, UsageReport):
            usage = _nested(what, "usage", UsageReport.from_dict, usage)
        _check_str(what, "stdout_path", stdout_path, nullable=True)
        _check_str(what, "stderr_path", stderr_path, nullable=True)
        distributor = _check_distributor_id(what, distributor_id)
        _check_str(what, "hostname", hostname, nullable=True)
        put = object.__setattr__
        put(self, "error_state", ErrorState(error_state))
        put(self, "message", texts[0])
        put(self, "exit", exit)
        put(self, "usage", usage)
        put(self, "stdout_tail", texts[1])
        put(self, "stderr_tail", texts[2])
        put(self, "stdout_path", stdout_path)
        put(self, "stderr_path", stderr_path)
        put(self, "distributor_id", distributor)
        put(self, "hostname", hostname)


def _nested(what: str, name: str, read: Callable[[Mapping[str, Any]], _T], value: object) -> _T:
    """Read the object in field `name`, or say that the field holds no object."""
    if not isinstance(value, Mapping):
        raise _field_error(what, name, "an object or null", value)
    return read(value)


Report = RunningReport | HeartbeatReport | FinalReport
"""The typed data of an event, one class per `EventKind`."""

_REPORTS: Final[Mapping[EventKind, type[Report]]] = {
    report.kind: report for report in (RunningReport, HeartbeatReport, FinalReport)
}


def read_report(kind: EventKind, data: object) -> Report:
    """The report of a `kind` event from its data; ChannelError naming the field that is wrong."""
    return _REPORTS[kind].from_dict(data)


class Event(Frozen):
    """One record a wrapper sends to the host.

    `writer` is a token unique to one wrapper run and `sequence` counts that writer's events
    from 0, so `(writer, sequence)` identifies an event: a host that may see an event twice
    (after resuming from an older cursor) drops the repeat by that pair.

    `data` is the report as it travelled (a JSON object, unknown keys included) and `report`
    its typed form. An event read from a channel, or sent by an `EventWriter`, has been
    checked already: a malformed report never gets that far.
    """

    _fields = ("kind", "task_instance_id", "writer", "sequence", "time", "data", "run_token")
    _unhashed = frozenset({"data"})
    __slots__ = (*_fields, "_report")  # a cache: not a field, neither compared nor shown

    kind: EventKind
    task_instance_id: int
    writer: str
    sequence: int
    time: float
    data: Mapping[str, Any]
    run_token: str | None
    """The `run_token` of the spec the wrapper ran (None before it read one, or when the spec
    had none): a host refuses a report that does not carry its run's token."""
    _report: Report | None

    def __init__(
        self,
        kind: EventKind,
        task_instance_id: int,
        writer: str,
        sequence: int,
        time: float,
        data: Mapping[str, Any] | None = None,
        run_token: str | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "kind", kind)
        put(self, "task_instance_id", task_instance_id)
        put(self, "writer", writer)
        put(self, "sequence", sequence)
        put(self, "time", time)
        put(self, "data", {} if data is None else data)
        put(self, "run_token", run_token)
        put(self, "_report", None)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "_report", None)

    @property
    def report(self) -> Report:
        """The typed data: a `RunningReport`, `HeartbeatReport` or `FinalReport` by `kind`.

        Read from `data` once; ChannelError, naming the field, if `data` is no such report
        (only an event built by hand can get here with one).
        """
        report = self._report
        if report is None:
            report = read_report(self.kind, self.data)
            object.__setattr__(self, "_report", report)
        return report

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {
            "kind": self.kind.value,
            "task_instance_id": self.task_instance_id,
            "writer": self.writer,
            "sequence": self.sequence,
            "time": self.time,
            "data": dict(self.data),
            # Left out when there is none, so that such a record reads as it always did.
            **({} if self.run_token is None else {"run_token": self.run_token}),
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
        """Read the form `to_dict` writes, checking each field and the report."""
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
        _check_str(what, "run_token", data.get("run_token"), nullable=True)
        event = cls(
            kind=parse_kind(data["kind"]),
            task_instance_id=data["task_instance_id"],
            writer=data["writer"],
            sequence=data["sequence"],
            time=float(data["time"]),
            data=payload,
            run_token=data.get("run_token"),
        )
        _ = event.report  # checked now, so that a reader skips a malformed report
        return event


def parse_kind(value: object) -> EventKind:
    """The `EventKind` named by `value`, or a ChannelError listing the known kinds."""
    if isinstance(value, str) and value in _KINDS:
        return EventKind(value)
    known = ", ".join(_KINDS)
    raise ChannelError(f"{value!r} is not an event kind this release knows. Known kinds: {known}.")


_KINDS: Final = tuple(kind.value for kind in EventKind)
