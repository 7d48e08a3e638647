"""The transport-independent half of a host channel.

A host channel is how the worker-node wrapper gets its task spec and reports back, without ever
opening the host's database. The host writes specs (and array step maps) and reads events; each
wrapper run reads its spec and writes its events through its own `EventWriter`. A transport
(`file://`, later `http://`) subclasses `Channel` and `EventWriter`; the sequencing and locking
of events live here so that every transport numbers and serialises them the same way.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType

from jobfleet.core.errors import ChannelError
from jobfleet.core.frozen import Frozen
from jobfleet.core.naming import safe_name

from .messages import Event, EventKind, Report, TaskSpec, parse_kind

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the worker-node wrapper's start path
    from collections.abc import Collection, Iterable
    from types import TracebackType
    from typing import Any, ClassVar, Self

__all__ = [
    "Channel",
    "EventCursor",
    "EventWriter",
    "check_member_key",
    "member_key",
    "new_writer_token",
]


def new_writer_token() -> str:
    """A token naming one wrapper run: hostname, pid and random hex, safe as a file name.

    The random part keeps two runs apart even when a pid is reused on the same host, or two
    hosts share a name.
    """
    return safe_name(f"{os.uname().nodename}-{os.getpid()}-{os.urandom(8).hex()}")


class EventCursor(Frozen):
    """Where a host is in the event stream of one channel.

    Callers treat it as opaque: they pass the cursor one `read_events` returned to the next,
    and may persist it with `to_dict` (JSON-ready) to resume after a crash. `positions` is the
    transport's bookkeeping (for `file://`, a byte offset per events file).

    `problems` lists, as sentences, the records the call that returned this cursor had to skip
    (corrupt lines, a file that shrank). They describe that one call only and are not saved by
    `to_dict`; a host logs them or records them against the instance.
    """

    _fields = ("transport", "positions", "problems")
    __slots__ = _fields
    _unhashed = frozenset({"positions"})

    transport: str
    positions: Mapping[str, int]
    problems: tuple[str, ...]

    def __init__(
        self,
        transport: str,
        positions: Mapping[str, int] | None = None,
        problems: tuple[str, ...] = (),
    ) -> None:
        put = object.__setattr__
        put(self, "transport", transport)
        put(self, "positions", {} if positions is None else positions)
        put(self, "problems", problems)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form a host may store (problems are left out)."""
        return {"transport": self.transport, "positions": dict(self.positions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventCursor:
        """Read back what `to_dict` wrote."""
        transport = data.get("transport") if isinstance(data, Mapping) else None
        positions = data.get("positions") if isinstance(data, Mapping) else None
        if not isinstance(transport, str) or not isinstance(positions, Mapping):
            raise ChannelError(
                "A saved event cursor must be an object with a 'transport' string and a "
                f"'positions' object, not {data!r:.120}."
            )
        for key, value in positions.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ChannelError(
                    f"The saved event cursor has the position {value!r} for {key!r}, "
                    "which is not a non-negative integer."
                )
        return cls(transport, MappingProxyType(dict(positions)))


class EventWriter(ABC):
    """Sends the events of one wrapper run for one task instance.

    `send` is thread-safe: a heartbeat thread and the main thread share one writer, and a lock
    makes each event's sequence number and its delivery one step, so the records of a writer
    arrive in sequence order. Transports implement `_deliver` and `_release`.
    """

    def __init__(self, task_instance_id: int, writer: str | None = None) -> None:
        self.task_instance_id = task_instance_id
        self.writer = writer or new_writer_token()
        self.run_token: str | None = None
        """Put in every event sent from now on: the wrapper sets it to its spec's `run_token`
        as soon as it has read the spec."""
        self._sequence = 0
        self._lock = threading.Lock()
        self._closed = False

    def send(
        self,
        kind: EventKind | str,
        data: Mapping[str, Any] | None = None,
        *,
        durable: bool = False,
    ) -> Event:
        """Send one event and return it; `durable=True` waits until it survives a crash.

        `data` must read as the report of `kind` (`send_report` builds it from a typed report).
        The wrapper sends its final report durably. A send that fails raises ChannelError; its
        sequence number may then stay unused, so sequences can have gaps but never repeat.
        """
        kind = parse_kind(kind)
        with self._lock:
            if self._closed:
                raise ChannelError(
                    f"The event writer {self.writer} of task instance "
                    f"{self.task_instance_id} is closed; no more events can be sent."
                )
            event = Event(
                kind=kind,
                task_instance_id=self.task_instance_id,
                writer=self.writer,
                sequence=self._sequence,
                time=time.time(),
                data=dict(data or {}),
                run_token=self.run_token,
            )
            # Both fail before the number is used: data that is not JSON, or not a report.
            line = event.to_line()
            _ = event.report
            self._sequence += 1
            self._deliver(event, line, durable=durable)
            return event

    def send_report(self, report: Report, *, durable: bool = False) -> Event:
        """Send a typed report as an event of its kind; see `send`."""
        return self.send(report.kind, report.to_dict(), durable=durable)

    def close(self) -> None:
        """Release the writer; later sends raise ChannelError. Closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    @abstractmethod
    def _deliver(self, event: Event, line: bytes, *, durable: bool) -> None:
        """Hand one serialised event to the transport (called under the writer's lock)."""

    @abstractmethod
    def _release(self) -> None:
        """Free what the writer holds (file descriptor, connection)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def member_key(array_id: int, batch_number: int, step: int) -> str:
    """The name of a packed member: its array, batch and step ("12.0.7")."""
    return f"{int(array_id)}.{int(batch_number)}.{int(step)}"


def check_member_key(member: str) -> str:
    """`member` when it is a member key, else a ChannelError (it names files)."""
    parts = member.split(".") if isinstance(member, str) else []
    if len(parts) != 3 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ChannelError(f"{member!r} is not a packed member's key (ARRAY.BATCH.STEP).")
    return member


class Channel(ABC):
    """One host channel, as seen by the host and by the worker-node wrappers.

    Events of different task instances (and of different wrapper runs of one instance) are not
    ordered with respect to each other; the events of one writer come in sequence order.
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL that names this channel (what a wrapper is given to open it)."""

    # Host side.

    @abstractmethod
    def put_spec(self, spec: TaskSpec) -> None:
        """Store the spec of a task instance; a reader never sees half of it."""

    @abstractmethod
    def put_array(self, array_id: int, batch_number: int, steps: Mapping[int, int]) -> None:
        """Store which task instance each 0-based step of an array batch runs."""

    def put_array_specs(
        self, array_id: int, batch_number: int, specs: Mapping[int, TaskSpec]
    ) -> None:
        """Store the specs of an array batch, by 0-based step, with its step map.

        The way to submit arrays: a transport may store the whole batch at once (the file
        transport writes one file instead of one per instance, which is what limits dispatch
        on most file systems). This default stores them one by one.
        """
        for spec in specs.values():
            self.put_spec(spec)
        self.put_array(
            array_id, batch_number, {step: s.task_instance_id for step, s in specs.items()}
        )

    @abstractmethod
    def read_events(self, cursor: EventCursor | None = None) -> tuple[list[Event], EventCursor]:
        """The events that arrived since `cursor` (since the start if None), and a new cursor.

        Each complete event is returned by exactly one call of a chain of cursors; a record
        still being written is left for a later call. Records that cannot be read are skipped
        and described in the returned cursor's `problems`, never raised.
        """

    @abstractmethod
    def remove(self, task_instance_id: int) -> None:
        """Delete the spec and events of a task instance whose final report is ingested."""

    def forget_events(self, task_instance_ids: Collection[int]) -> None:
        """Delete the events of task instances whose final report the host has recorded.

        The host calls it once the final reports are committed to its ledger, so that neither
        the channel nor the host's event cursor (which holds a position per events file) grows
        with every instance a run has ever had. A writer opened later for such an instance
        still reports as before. Removing what is not there is not an error. This default keeps
        everything: for transports whose cursor does not grow.
        """
        return

    def remove_spec(self, task_instance_id: int) -> None:
        """Delete the spec of a task instance whose attempt has ended, keeping its events.

        A spec holds the task's `env`; once the attempt is over nothing may run it again (a
        retry is a new instance). Its events stay, so that a wrapper's late report still
        arrives. Removing what is not there is not an error. This default removes the events
        too (`remove`): a transport that can keep them overrides it.
        """
        self.remove(task_instance_id)

    @abstractmethod
    def remove_array(self, array_id: int, batch_number: int) -> None:
        """Delete the step map (and the specs stored with it) of an array batch whose steps
        have all ended."""

    # Worker side.

    @abstractmethod
    def get_spec(self, task_instance_id: int) -> TaskSpec:
        """The spec of a task instance; ChannelError if the host stored none."""

    @abstractmethod
    def resolve_array_step(self, array_id: int, batch_number: int, step: int) -> int:
        """The task instance id that step `step` (0-based) of an array batch runs."""

    def get_array_step(self, array_id: int, batch_number: int, step: int) -> TaskSpec:
        """The spec that step `step` of an array batch runs, however the host stored it."""
        return self.get_spec(self.resolve_array_step(array_id, batch_number, step))

    def get_array_steps(
        self, array_id: int, batch_number: int, steps: Iterable[int]
    ) -> dict[int, TaskSpec]:
        """The specs of several steps of an array batch (a packed job's members), by step.

        A step the batch does not have is left out. This default asks step by step; a
        transport that stores a batch whole reads it once.
        """
        found = {}
        for step in steps:
            try:
                found[step] = self.get_array_step(array_id, batch_number, step)
            except ChannelError:
                continue
        return found

    # Packed members (see jobfleet.core.packing): one backend job runs several task instances
    # in turn, so the backend cannot kill one of them; the host asks through the channel, and
    # the pack worker says which member it is running so that the host knows whom to wait for.

    supports_member_kills: ClassVar[bool] = False
    """Whether this transport carries member kill requests (packing needs it)."""

    # A member is named by its place, "<array_id>.<batch_number>.<step>" (`member_key`): the
    # backend's id of a member carries it, so the host needs no lookup to ask for a kill.

    def request_member_kill(self, member: str) -> None:
        """Host side: ask the pack worker to kill (or skip) this member."""
        raise ChannelError(f"The {type(self).__name__} carries no member kill requests.")

    def member_running(self, member: str) -> bool:
        """Host side: whether a pack worker runs this member now (or did when it died)."""
        return False

    def member_kill_requested(self, member: str) -> bool:
        """Worker side: whether the host asked to kill this member."""
        return False

    def mark_member_running(self, member: str, running: bool) -> None:
        """Worker side: say that this member starts (True) or has ended (False)."""
        raise ChannelError(f"The {type(self).__name__} carries no packed members' marks.")

    @abstractmethod
    def open_writer(self, task_instance_id: int) -> EventWriter:
        """A new writer, with a fresh token, for one wrapper run of a task instance."""

    @abstractmethod
    def close(self) -> None:
        """Release what the channel holds; writers it opened stay usable until closed."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
