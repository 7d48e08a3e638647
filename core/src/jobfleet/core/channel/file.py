"""The `file://` transport: a directory shared by the host and the worker nodes.

It serves local backends and clusters with a shared file system (NFS and the like). Layout
under the root:

    channel.json                                  {"protocol": 1}, written by the host
    specs/<task_instance_id>.json                 one task spec, replaced atomically
    arrays/<array_id>.<batch_number>.json         one array step map, replaced atomically
    events/<task_instance_id>.<writer>.jsonl      the events of one wrapper run, appended
    members/<array_id>.<batch>.<step>.kill        the host asks a pack worker to kill a member
    members/<array_id>.<batch>.<step>.running     a pack worker runs this member now

File names come only from integers and sanitised writer tokens, never from task names. Every
events file has exactly one writer, so records can never interleave, even on NFS where
O_APPEND is not atomic across clients; readers consume only complete lines, so a record still
being written (or torn by a killed writer) is never parsed.

Everything is created owner-only (directories 0700, files 0600): specs hold the tasks' `env`,
and events the tails of their output.
"""

from __future__ import annotations

import contextlib
import json
import os
from types import MappingProxyType

from jobfleet.core.errors import ChannelError, ProtocolVersionError
from jobfleet.core.private import make_private_dirs, open_private

from .base import Channel, EventCursor, EventWriter, check_member_key
from .messages import PROTOCOL_VERSION, Event, TaskSpec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the worker-node wrapper's start path
    from collections.abc import Collection, Iterable, Iterator, Mapping
    from typing import Any, Final

__all__ = ["TRANSPORT", "FileChannel", "FileEventWriter", "path_from_url"]

TRANSPORT: Final = "file"

_CHANNEL_FILE: Final = "channel.json"
_SPECS: Final = "specs"
_ARRAYS: Final = "arrays"
_EVENTS: Final = "events"
_EVENTS_SUFFIX: Final = ".jsonl"
_MEMBERS: Final = "members"


def path_from_url(url: str) -> str:
    """The directory a `file:///abs/path` URL (or a plain absolute path) names."""
    if os.path.isabs(url):
        return os.path.normpath(url)
    if url[:8].lower() == "file:///" and url.isprintable() and not any(c in url for c in "?#%[]"):
        # What urlsplit and unquote make of it, without importing urllib.parse (ipaddress):
        # the wrapper opens one channel per task.
        return os.path.normpath(url[7:])
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() != TRANSPORT:
        raise ChannelError(f"{url!r} is not a file URL; write it as file:///absolute/path.")
    if parts.netloc not in ("", "localhost"):
        raise ChannelError(
            f"The file URL {url!r} names the host {parts.netloc!r}; a file channel must be an "
            "absolute path on this machine, written as file:///absolute/path."
        )
    if parts.query or parts.fragment:
        raise ChannelError(f"The file URL {url!r} has a query or fragment, which means nothing.")
    path = unquote(parts.path)
    if not os.path.isabs(path):
        raise ChannelError(
            f"The file URL {url!r} is relative; write it as file:///absolute/path so that the "
            "host and the worker nodes find the same directory."
        )
    return os.path.normpath(path)


def _check_id(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ChannelError(f"The {what} must be a non-negative integer, not {value!r:.80}.")


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`: a write to a file may be short (signals, NFS, full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"os.write wrote nothing of the {len(view)} bytes left")
        view = view[written:]


def _fsync_directory(path: str) -> None:
    """Make a new or renamed entry of `path` survive a crash, where the file system allows.

    Some file systems (and all of Windows) refuse to fsync a directory; the file's own fsync
    is then the best there is, so the refusal is ignored.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(path: str, payload: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `payload` so that a reader sees the old or the new file, never half.

    The temporary file lives in the same directory (a rename is atomic only within one file
    system) and starts with a dot, so nothing scanning the directory mistakes it for data.
    `durable=False` skips the two fsyncs: the rename alone keeps readers from ever seeing half
    a file; only a power loss could lose the write, and what a host writes that way (specs,
    array maps) it writes again from its ledger when it resumes. The fsyncs cost about half a
    millisecond per file here, which capped dispatch near 2,000 instances a second.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.urandom(8).hex()}.tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            _write_all(fd, payload)
            if durable:
                os.fsync(fd)  # the data must be on disk before the rename makes it visible
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        _fsync_directory(directory)


def _read_json(path: str) -> Any:
    """The JSON in `path`; FileNotFoundError passes through for the caller to word."""
    with open(path, "rb") as stream:
        raw = stream.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError(f"The channel file {path} is not valid JSON: {exc}.") from exc


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("ascii")


def _split_events_name(name: str) -> tuple[int, str] | None:
    """(task instance id, writer) of an events file name, or None for any other file."""
    if name.startswith(".") or not name.endswith(_EVENTS_SUFFIX):
        return None
    head, _, writer = name[: -len(_EVENTS_SUFFIX)].partition(".")
    if not head.isdigit() or not head.isascii() or not writer:
        return None
    return int(head), writer


class FileEventWriter(EventWriter):
    """Appends the events of one wrapper run to its own file, created exclusively."""

    def __init__(self, directory: str, task_instance_id: int) -> None:
        super().__init__(task_instance_id)
        self._directory = directory
        self.path = os.path.join(directory, f"{task_instance_id}.{self.writer}{_EVENTS_SUFFIX}")
        # O_EXCL: should two runs ever draw the same token, the second fails here instead of
        # interleaving its records with the first one's.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
        try:
            self._fd = open_private(self.path, flags)
        except OSError as exc:
            raise ChannelError(
                f"Could not create the events file {self.path} of task instance "
                f"{task_instance_id}: {exc}."
            ) from exc
        self._torn = False
        self._entry_synced = False

    def _deliver(self, event: Event, line: bytes, *, durable: bool) -> None:
        if self._torn:
            # An earlier write failed part way: end that torn record, so that the reader skips
            # it as one bad line and this record stays readable.
            line = b"\n" + line
        self._torn = True
        try:
            _write_all(self._fd, line)
            self._torn = False
            if durable:
                self._sync()
        except OSError as exc:
            raise ChannelError(
                f"Could not write the {event.kind.value} event of task instance "
                f"{event.task_instance_id} to {self.path}: {exc}."
            ) from exc

    def _sync(self) -> None:
        os.fsync(self._fd)
        if not self._entry_synced:
            # The file was created by this run; its directory entry must survive a crash too.
            _fsync_directory(self._directory)
            self._entry_synced = True

    def _release(self) -> None:
        os.close(self._fd)


class FileChannel(Channel):
    """A host channel in a directory; see the module documentation for the layout.

    `FileChannel.create(path)` (host) makes the directory and its `channel.json`;
    `FileChannel(path)` (host or worker) opens an existing one and checks its protocol.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._url: str | None = None  # made when asked: pathlib is not on the wrapper's path
        self._check_channel_file()

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> FileChannel:
        """Make (or reopen) a channel directory on the host side."""
        path = os.path.abspath(os.fspath(root))
        try:
            for sub in (_SPECS, _ARRAYS, _EVENTS):
                make_private_dirs(os.path.join(path, sub))
            marker = os.path.join(path, _CHANNEL_FILE)
            if not os.path.exists(marker):
                _write_atomically(marker, _dump({"protocol": PROTOCOL_VERSION}))
        except OSError as exc:
            raise ChannelError(f"Could not create the channel directory {path}: {exc}.") from exc
        # An existing channel of another version is refused here rather than overwritten:
        # wrappers of the old release may still be reading it.
        return cls(path)

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> FileChannel:
        """The transport factory `open_channel` calls for `file:` URLs and absolute paths."""
        path = path_from_url(url)
        return cls.create(path) if create else cls(path)

    @property
    def url(self) -> str:
        if self._url is None:
            from pathlib import Path

            self._url = Path(self._root).as_uri()
        return self._url

    @property
    def root(self) -> str:
        """The channel directory."""
        return self._root

    def __repr__(self) -> str:
        return f"FileChannel({self._root!r})"

    def _check_channel_file(self) -> None:
        if not os.path.isdir(self._root):
            raise ChannelError(f"The channel directory {self._root} does not exist.")
        marker = os.path.join(self._root, _CHANNEL_FILE)
        try:
            data = _read_json(marker)
        except FileNotFoundError:
            raise ChannelError(
                f"{self._root} is not a jobfleet channel: it has no {_CHANNEL_FILE}. "
                "The host creates it with FileChannel.create or open_channel(url, create=True)."
            ) from None
        except OSError as exc:
            raise ChannelError(f"Could not read {marker}: {exc}.") from exc
        version = data.get("protocol") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise ChannelError(f"{marker} does not say which channel protocol it speaks.")
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"The channel {self.url} speaks protocol version {version}, but this "
                f"release of jobfleet speaks version {PROTOCOL_VERSION}. Run the same jobfleet "
                "release on the host and the worker nodes."
            )

    def _path(self, *parts: str) -> str:
        return os.path.join(self._root, *parts)

    def _spec_path(self, task_instance_id: int) -> str:
        return self._path(_SPECS, f"{_check_id(task_instance_id, 'task instance id')}.json")

    def _array_path(self, array_id: int, batch_number: int) -> str:
        array = _check_id(array_id, "array id")
        batch = _check_id(batch_number, "batch number")
        return self._path(_ARRAYS, f"{array}.{batch}.json")

    # Host side.

    def put_spec(self, spec: TaskSpec) -> None:
        path = self._spec_path(spec.task_instance_id)
        try:
            _write_atomically(path, _dump(spec.to_dict()), durable=False)
        except OSError as exc:
            raise ChannelError(
                f"Could not store the spec of task instance {spec.task_instance_id} "
                f"in {self.url}: {exc}."
            ) from exc

    def put_array(self, array_id: int, batch_number: int, steps: Mapping[int, int]) -> None:
        table = {
            str(_check_id(step, "array step")): _check_id(tid, "task instance id")
            for step, tid in steps.items()
        }
        self._write_array(array_id, batch_number, {"steps": table})

    def put_array_specs(
        self, array_id: int, batch_number: int, specs: Mapping[int, TaskSpec]
    ) -> None:
        """One file for the step map and every spec of the batch (see `Channel`)."""
        table = {
            str(_check_id(step, "array step")): spec.task_instance_id
            for step, spec in specs.items()
        }
        inline = {str(step): spec.to_dict() for step, spec in specs.items()}
        self._write_array(array_id, batch_number, {"steps": table, "specs": inline})

    def _write_array(self, array_id: int, batch_number: int, content: dict[str, Any]) -> None:
        path = self._array_path(array_id, batch_number)
        payload = {"array_id": array_id, "batch_number": batch_number, **content}
        try:
            _write_atomically(path, _dump(payload), durable=False)
        except OSError as exc:
            raise ChannelError(
                f"Could not store the step map of array {array_id} batch {batch_number} "
                f"in {self.url}: {exc}."
            ) from exc

    def read_events(self, cursor: EventCursor | None = None) -> tuple[list[Event], EventCursor]:
        """Read what the events files gained since `cursor`; see `Channel.read_events`.

        One scan of `events/` per call; only files that grew are opened, and only up to the
        size the scan saw. Files come in name order and each file's events in sequence order.
        A file that is gone (removed) simply drops out of the new cursor.
        """
        previous = self._positions(cursor)
        events: list[Event] = []
        problems: list[str] = []
        positions: dict[str, int] = {}
        for name, size in sorted(self._scan_events()):
            start = previous.get(name, 0)
            if size < start:
                problems.append(
                    f"The events file {self._path(_EVENTS, name)} is shorter ({size} bytes) "
                    f"than the {start} bytes already read: it was truncated or replaced, or "
                    "the file system reports a stale size. Reading goes on from where it was."
                )
            elif size > start:
                start = self._read_new_records(name, start, size, events, problems)
            positions[name] = start
        return events, EventCursor(TRANSPORT, MappingProxyType(positions), tuple(problems))

    def _positions(self, cursor: EventCursor | None) -> Mapping[str, int]:
        if cursor is None:
            return {}
        if cursor.transport != TRANSPORT:
            raise ChannelError(
                f"The event cursor belongs to a {cursor.transport!r} channel, not to the "
                f"file channel {self.url}."
            )
        return cursor.positions

    def _scan_events(self) -> Iterator[tuple[str, int]]:
        """(name, size) of every events file, from one directory listing."""
        directory = self._path(_EVENTS)
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if _split_events_name(entry.name) is None:
                        continue
                    try:
                        yield entry.name, entry.stat().st_size
                    except FileNotFoundError:  # removed since the listing
                        continue
        except FileNotFoundError:
            raise ChannelError(f"The channel {self.url} has no {_EVENTS} directory.") from None

    def _read_new_records(
        self, name: str, start: int, size: int, events: list[Event], problems: list[str]
    ) -> int:
        """Parse the complete records in bytes [start, size) of one file; return the new start."""
        path = self._path(_EVENTS, name)
        try:
            with open(path, "rb") as stream:
                stream.seek(start)
                chunk = stream.read(size - start)
        except FileNotFoundError:  # removed since the scan
            return start
        except OSError as exc:
            problems.append(f"Could not read the events file {path}; will try again: {exc}.")
            return start
        # Only complete lines are consumed: a record still being written stays for later.
        end = chunk.rfind(b"\n") + 1
        offset = start
        for line in chunk[:end].split(b"\n")[:-1]:
            if line.strip():
                event = self._parse_record(name, offset, line, problems)
                if event is not None:
                    events.append(event)
            offset += len(line) + 1
        return start + end

    def _parse_record(
        self, name: str, offset: int, line: bytes, problems: list[str]
    ) -> Event | None:
        where = f"the record at byte {offset} of {self._path(_EVENTS, name)}"
        try:
            event = Event.from_line(line)
        except ChannelError as exc:
            problems.append(f"Skipped {where}: {exc}")
            return None
        if (event.task_instance_id, event.writer) != _split_events_name(name):
            problems.append(
                f"Skipped {where}: it names task instance {event.task_instance_id} and writer "
                f"{event.writer!r}, which do not match the file name."
            )
            return None
        return event

    def remove(self, task_instance_id: int) -> None:
        spec = self._spec_path(task_instance_id)
        directory = self._path(_EVENTS)
        prefix = f"{task_instance_id}."
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec)
            with os.scandir(directory) as entries:
                names = [e.name for e in entries if e.name.startswith(prefix)]
            for name in names:
                if _split_events_name(name) is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
        except OSError as exc:
            raise ChannelError(
                f"Could not remove task instance {task_instance_id} from {self.url}: {exc}."
            ) from exc

    def forget_events(self, task_instance_ids: Collection[int]) -> None:
        """One listing of `events/`, then each of these instances' files unlinked."""
        wanted = set(task_instance_ids)
        if not wanted:
            return
        directory = self._path(_EVENTS)
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries]
            for name in names:
                split = _split_events_name(name)
                if split is not None and split[0] in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
        except OSError as exc:
            raise ChannelError(
                f"Could not remove ended instances' events from {self.url}: {exc}."
            ) from exc

    def remove_spec(self, task_instance_id: int) -> None:
        try:
            os.unlink(self._spec_path(task_instance_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ChannelError(
                f"Could not remove the spec of task instance {task_instance_id} from "
                f"{self.url}: {exc}."
            ) from exc

    def remove_array(self, array_id: int, batch_number: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._array_path(array_id, batch_number))

    # Worker side.

    def get_spec(self, task_instance_id: int) -> TaskSpec:
        path = self._spec_path(task_instance_id)
        try:
            data = _read_json(path)
        except FileNotFoundError:
            raise ChannelError(
                f"There is no spec for task instance {task_instance_id} in {self.url}."
            ) from None
        except OSError as exc:
            raise ChannelError(f"Could not read the spec file {path}: {exc}.") from exc
        return TaskSpec.from_dict(data)

    def resolve_array_step(self, array_id: int, batch_number: int, step: int) -> int:
        data, path = self._read_array(array_id, batch_number)
        steps = data.get("steps") if isinstance(data, dict) else None
        tid = steps.get(str(_check_id(step, "array step"))) if isinstance(steps, dict) else None
        if tid is None:
            raise ChannelError(
                f"Array {array_id} batch {batch_number} in {self.url} has no step {step}."
            )
        return _check_id(tid, f"task instance id of step {step} in {path}")

    def get_array_step(self, array_id: int, batch_number: int, step: int) -> TaskSpec:
        data, _ = self._read_array(array_id, batch_number)
        inline = data.get("specs") if isinstance(data, dict) else None
        if not isinstance(inline, dict):  # a step map alone: the specs are files of their own
            return self.get_spec(self.resolve_array_step(array_id, batch_number, step))
        found = inline.get(str(_check_id(step, "array step")))
        if found is None:
            raise ChannelError(
                f"Array {array_id} batch {batch_number} in {self.url} has no step {step}."
            )
        return TaskSpec.from_dict(found)

    def _read_array(self, array_id: int, batch_number: int) -> tuple[Any, str]:
        path = self._array_path(array_id, batch_number)
        try:
            return _read_json(path), path
        except FileNotFoundError:
            raise ChannelError(
                f"There is no step map for array {array_id} batch {batch_number} in {self.url}."
            ) from None
        except OSError as exc:
            raise ChannelError(f"Could not read the step map {path}: {exc}.") from exc

    def get_array_steps(
        self, array_id: int, batch_number: int, steps: Iterable[int]
    ) -> dict[int, TaskSpec]:
        """Read the batch's file once for all of `steps` (a packed job's members)."""
        data, _ = self._read_array(array_id, batch_number)
        inline = data.get("specs") if isinstance(data, dict) else None
        if not isinstance(inline, dict):
            return super().get_array_steps(array_id, batch_number, steps)
        return {
            step: TaskSpec.from_dict(inline[str(step)]) for step in steps if str(step) in inline
        }

    # Packed members: empty marker files, so a check is one stat (see `Channel`).

    supports_member_kills = True

    def _member_path(self, member: str, kind: str) -> str:
        return self._path(_MEMBERS, f"{check_member_key(member)}.{kind}")

    def _touch(self, path: str) -> None:
        make_private_dirs(os.path.dirname(path))
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT))

    def request_member_kill(self, member: str) -> None:
        path = self._member_path(member, "kill")
        try:
            self._touch(path)
        except OSError as exc:
            raise ChannelError(f"Could not write the kill request {path}: {exc}.") from exc

    def member_running(self, member: str) -> bool:
        return os.path.exists(self._member_path(member, "running"))

    def member_kill_requested(self, member: str) -> bool:
        return os.path.exists(self._member_path(member, "kill"))

    def mark_member_running(self, member: str, running: bool) -> None:
        path = self._member_path(member, "running")
        try:
            if running:
                self._touch(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        except OSError as exc:
            raise ChannelError(f"Could not mark member {member}: {exc}.") from exc

    def open_writer(self, task_instance_id: int) -> EventWriter:
        tid = _check_id(task_instance_id, "task instance id")
        return FileEventWriter(self._path(_EVENTS), tid)

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""
