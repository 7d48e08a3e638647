"""The conformance kit's own minimal host: specs into a file channel, reports out of it.

It does what a real host does for one distributor, and no more: it numbers task instances,
stores their specs (and array step maps) in a `file://` channel, submits worker-node commands
through the distributor, and reads the wrappers' events with one cursor kept across calls. So
the kit runs real commands through the real `jobfleet-worker-node` on any backend whose nodes
can reach the kit's temporary directory — or, with `transport="http"`, any node that can reach
the kit's HTTP channel server (which serves the same file channel, as the real host does).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobfleet.core import owned_dirs
from jobfleet.core.channel import (
    Channel,
    Event,
    EventCursor,
    EventKind,
    FinalReport,
    HeartbeatReport,
    RunningReport,
    TaskSpec,
    open_channel,
)
from jobfleet.core.cluster_protocol import ClusterDistributor

T = TypeVar("T")
R = TypeVar("R", RunningReport, HeartbeatReport, FinalReport)

DEFAULT_TIMEOUT = 120.0
"""Seconds a wait gives up after: generous, because CI machines are slow and shared."""

POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Submitted:
    """One submitted task instance: the host's id and the backend's."""

    task_instance_id: int
    distributor_id: str


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = DEFAULT_TIMEOUT) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def is_locked(path: Path) -> bool:
    """Whether some process holds a lock on `path` (checked without waiting).

    How the kit and the tests see that a task's processes are gone: each holds a lock on a
    file, and a lock dies with the last process holding it, whatever its session or parent.
    """
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class KitHost:
    """A host of one channel under `root`; task instance ids count from 1.

    `transport="http"` also serves the channel over HTTP on loopback (any free port, or
    `bind`; `address` is the base URL nodes reach it at, e.g. for a real cluster's pods): `url`
    is then the served URL and `token` the channel token a distributor must give its wrappers
    (`distributor_kwargs()` has both).
    """

    def __init__(
        self,
        root: Path,
        transport: str = "file",
        *,
        bind: str = "127.0.0.1:0",
        address: str | None = None,
        state_dir: bool = False,
        packed: bool = False,
    ) -> None:
        if transport not in ("file", "http"):
            raise ValueError(f"transport must be file or http, not {transport!r}")
        self.root = root
        self.logs = root / "logs"
        self.transport = transport
        self.channel: Channel = open_channel(f"file://{root / 'channel'}", create=True)
        self.served: Any = None
        if transport == "http":
            from jobfleet.core.channel import FileChannel
            from jobfleet.core.host.channel_server import serve_channel

            assert isinstance(self.channel, FileChannel)
            # One server per process serves every kit host: each under a key of its own.
            key = f"kit-{os.urandom(6).hex()}"
            self.served = serve_channel(self.channel, key, bind=bind, address=address)
        self.state_dir: Path | None = None
        if state_dir:
            from jobfleet.core.private import make_private_dirs

            self.state_dir = make_private_dirs(root / "distributor")
        self.packed = packed
        """`submit` sends each job as the first member of a packed array element (the second
        member's step has no spec, so the element runs the job alone): the kit then checks
        every contract through packing (jobfleet.core.packing)."""
        self._task_ids = itertools.count(1)
        self._array_ids = itertools.count(1)
        self._cursor: EventCursor | None = None
        self._events: list[Event] = []

    @property
    def url(self) -> str:
        """The channel's URL: what distributors receive as `host_url`."""
        return str(self.served.url) if self.served is not None else self.channel.url

    @property
    def token(self) -> str | None:
        """The channel token of an http channel (None for a file channel)."""
        return str(self.served.token) if self.served is not None else None

    def distributor_kwargs(self) -> dict[str, Any]:
        """What a distributor factory receives: `host_url=`, and `channel_token=` for http."""
        kwargs: dict[str, Any] = {"host_url": self.url}
        if self.token is not None:
            kwargs["channel_token"] = self.token
        if self.state_dir is not None:
            kwargs["state_dir"] = self.state_dir
        return kwargs

    # -- specs and submission -----------------------------------------------------------------

    def add_spec(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        memory: int | None = None,
        runtime: int | None = None,
    ) -> int:
        """Store the spec of a new task instance and return its id."""
        task_instance_id = next(self._task_ids)
        spec = TaskSpec(
            task_instance_id=task_instance_id,
            command=command,
            name=name or f"kit-{task_instance_id}",
            stdout_dir=str(self.logs),
            stderr_dir=str(self.logs),
            environment=dict(env or {}),
            memory=memory,
            runtime=runtime,
        )
        self.channel.put_spec(spec)
        return task_instance_id

    def submit(
        self,
        distributor: ClusterDistributor,
        command: str,
        *,
        resources: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        memory: int | None = None,
        runtime: int | None = None,
    ) -> Submitted:
        """Store a spec running `command` and submit its worker-node command."""
        task_instance_id = self.add_spec(
            command, env=env, name=name, memory=memory, runtime=runtime
        )
        if self.packed:
            return self._submit_packed(distributor, task_instance_id, name, resources)
        worker_command = distributor.build_worker_node_command(task_instance_id=task_instance_id)
        distributor_id = distributor.submit_to_batch_distributor(
            worker_command, name or f"kit-{task_instance_id}", dict(resources or {})
        )
        return Submitted(task_instance_id, distributor_id)

    def _submit_packed(
        self,
        distributor: ClusterDistributor,
        task_instance_id: int,
        name: str | None,
        resources: Mapping[str, Any] | None,
    ) -> Submitted:
        array_id = next(self._array_ids)
        self.channel.put_array(array_id, 0, {0: task_instance_id})
        worker_command = distributor.build_worker_node_command(array_id=array_id, batch_number=0)
        packed = {**(resources or {}), "pack": {"max_tasks": 2}}
        steps = distributor.submit_array_to_batch_distributor(
            worker_command, name or f"kit-{task_instance_id}", packed, 2
        )
        from jobfleet.core.packing import split_member_id

        # Else the kit would check the unpacked path again and call it packing.
        assert split_member_id(steps[0]) is not None, f"not submitted packed: {steps[0]!r}"
        return Submitted(task_instance_id, steps[0])

    def submit_array(
        self,
        distributor: ClusterDistributor,
        commands: Sequence[str],
        resources: Mapping[str, Any] | None = None,
    ) -> list[Submitted]:
        """Store one spec per command and a step map, and submit them as one array (batch 0).

        The result is in step order: element n is step n.
        """
        array_id = next(self._array_ids)
        task_instance_ids = [self.add_spec(command) for command in commands]
        self.channel.put_array(array_id, 0, dict(enumerate(task_instance_ids)))
        worker_command = distributor.build_worker_node_command(array_id=array_id, batch_number=0)
        steps = distributor.submit_array_to_batch_distributor(
            worker_command, f"kit-array-{array_id}", dict(resources or {}), len(commands)
        )
        return [Submitted(ti, steps[step]) for step, ti in enumerate(task_instance_ids)]

    # -- events -------------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """The events that arrived since the last call (every event is returned once)."""
        new, self._cursor = self.channel.read_events(self._cursor)
        self._events.extend(new)
        return new

    def history(self) -> list[Event]:
        """Every event read so far (reading what is new first)."""
        self.events()
        return list(self._events)

    def _matching(self, kind: EventKind, task_instance_id: int | None) -> list[Event]:
        self.events()
        return [
            event
            for event in self._events
            if event.kind is kind
            and (task_instance_id is None or event.task_instance_id == task_instance_id)
        ]

    def reports(self, kind: type[R], task_instance_id: int | None = None) -> list[R]:
        """The typed reports of `kind` read so far (e.g. `FinalReport`), of one instance or all."""
        return [
            event.report
            for event in self._matching(kind.kind, task_instance_id)
            if isinstance(event.report, kind)
        ]

    def final_reports(self) -> dict[int, list[FinalReport]]:
        """Every final report read so far, by task instance (a list, to show repeats)."""
        found: dict[int, list[FinalReport]] = {}
        for event in self._matching(EventKind.FINAL, None):
            if isinstance(event.report, FinalReport):
                found.setdefault(event.task_instance_id, []).append(event.report)
        return found

    def wait_report(
        self, kind: type[R], task_instance_id: int, timeout: float = DEFAULT_TIMEOUT
    ) -> R:
        """The instance's first report of `kind`, once it has arrived."""
        what = f"a {kind.kind.value} report of task instance {task_instance_id}"
        return _first(lambda: self.reports(kind, task_instance_id), what, timeout)

    def started(self) -> set[int]:
        """The task instances that have sent a RUNNING event so far."""
        return {e.task_instance_id for e in self._matching(EventKind.RUNNING, None)}

    def close(self) -> None:
        if self.served is not None:
            self.served.close()
            self.served = None
        self.channel.close()


def _first(found: Callable[[], list[T]], what: str, timeout: float) -> T:
    """The first of what `found` lists, once it lists anything."""

    def first() -> T | None:
        items = found()
        return items[0] if items else None

    return wait_for(first, what, timeout)


def hold_session_lock(root: Path) -> object:
    """Lock `root/lock` for as long as the returned handle is open (a test session's server).

    `abandoned_directories` passes over directories locked so: their session still runs.
    """
    return open(owned_dirs.hold_lock(root), "rb")  # held open for the whole session


def abandoned_directories(pattern: str) -> Iterator[Path]:
    """Directories of the temp dir matching `pattern` whose session lock nobody holds.

    Servers that test sessions start (PostgreSQL, Slurm) live in such directories; a session
    killed before it could stop its server leaves one behind, for the next session to stop
    and remove. Each directory is yielded while its lock is held, so two sweepers never
    handle the same one (see `jobfleet.core.owned_dirs`, which the local backends' work
    directories use alike).
    """
    yield from owned_dirs.abandoned_directories(pattern)
