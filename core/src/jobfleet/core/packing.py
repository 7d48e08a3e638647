"""Packing: several short task instances of one array run in turn by one backend job.

A batch scheduler spends most of a short task's time on the job around it (scheduling, prolog,
the wrapper's start). A request with `pack: {max_tasks: K, max_runtime: T}` lets a backend submit
an array of n instances as ceil(n/k) *elements*, each a `jobfleet-worker-node array … --pack k`
that runs its k *members* one after another (worker_node/pack.py); every member stays its own
task instance, with its own reports, exit record, usage and retries.

`Packer` is the backend-independent half, used by `BaseClusterDistributor`: it chooses k, submits
the elements through the backend's own array submission, and answers status, exit info and kills
per member from the backend's answers per element:

- a member's id is `<element id>+<array>.<batch>.<step>`, so that a host resumed after a crash (a
  new distributor that submitted nothing) reads everything from the id alone;
- a member is running while its element is queued or running (once it has reported its end the
  host asks no more);
- a kill of one member goes through the channel (`Channel.request_member_kill`): the pack worker
  skips it, or stops it and reports it killed; the other members go on. A kill that covers every
  member of an element this distributor submitted also cancels the element;
- a member that never reported is given its element's exit info only when it was the one running
  as the element ended (its running mark is still there); one that never started is U, never
  blamed for a neighbour's out-of-memory or timeout.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.resources import PACK, ResourceRequest
from jobfleet.core.wrapper import DEFAULT_KILL_GRACE

MEMBER_SEPARATOR: Final = "+"
"""Between an element's id and a member's key in a member's id: no backend's own ids use it
(Slurm: 123_4 and 123_4.batch; Kubernetes names: letters, digits, "-" and ".")."""

ELEMENT_MARGIN: Final = 60
"""Seconds added to an element's runtime, for the pack worker's own start and end."""

KILL_WAIT: Final = 60.0
"""Seconds a member kill waits for a running member's worker to stop it and report."""
_KILL_POLL: Final = 0.1


@dataclass(frozen=True)
class Member:
    """A member's place: its element's backend id and its key (array.batch.step)."""

    element: str
    key: str


def split_member_id(distributor_id: str) -> Member | None:
    """The element and key of a member's id; None for an id that is no member's."""
    element, separator, key = str(distributor_id).rpartition(MEMBER_SEPARATOR)
    parts = key.split(".")
    if not separator or not element or len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return Member(element, key)


def members_per_element(requested: Mapping[str, Any], array_length: int) -> int:
    """k: how many members each element runs (1: no packing).

    At most `max_tasks`, and, when members have a runtime and the pack a `max_runtime`, no more
    than fit in it; then evened out over the elements (100 at 30 a piece: 4 elements of 25, not
    three of 30 and one of 10), since the elements run side by side.
    """
    request = ResourceRequest.parse(requested)
    pack = request.pack
    if pack is None or array_length < 2:
        return 1
    most = pack.max_tasks
    if pack.max_runtime is not None and request.runtime:
        most = min(most, pack.max_runtime // request.runtime)
    most = max(1, min(most, array_length))
    elements = math.ceil(array_length / most)
    return math.ceil(array_length / elements)


def element_resources(
    requested: Mapping[str, Any], members: int, kill_grace: float = DEFAULT_KILL_GRACE
) -> dict[str, Any]:
    """An element's request: its members' (identical within an array), without `pack`, with a
    runtime that holds all of them one after another, each to its own limit.

    A member over its runtime is stopped by its wrapper, which waits `kill_grace` before
    SIGKILL: each member may take its runtime plus that grace (and a second to start), so the
    element's limit never stops a member that its own limit would have stopped (a member the
    backend stops ends K, and is not retried with more time).
    """
    resources = {key: value for key, value in requested.items() if key != PACK}
    runtime = ResourceRequest.parse(resources).runtime
    if runtime is not None:
        each = runtime + math.ceil(kill_grace) + 1
        resources["runtime"] = members * each + ELEMENT_MARGIN
    return resources


def array_coordinates(command: str) -> tuple[int, int]:
    """The array id and batch number of a worker-node `array` command line."""
    words = shlex.split(command)
    values: dict[str, int] = {}
    for option in ("--array-id", "--batch-number"):
        for index, word in enumerate(words):
            if word == option and index + 1 < len(words):
                values[option] = int(words[index + 1])
            elif word.startswith(option + "="):
                values[option] = int(word.partition("=")[2])
    if len(values) != 2:
        raise ValueError(f"{command!r} is not a worker-node array command")
    return values["--array-id"], values["--batch-number"]


class Packer:
    """Packing for one distributor, over its own array submission and per-element answers."""

    def __init__(self, open_channel: Callable[[], Any]) -> None:
        self._open_channel = open_channel
        self._channel: Any = None
        self._members: dict[str, set[str]] = {}  # element → the member ids submitted with it
        self.killed: set[str] = set()

    def channel(self) -> Any:
        if self._channel is None:
            self._channel = self._open_channel()
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def can_pack(self) -> bool:
        """Whether member kills can reach the pack workers (the channel carries them)."""
        try:
            return bool(self.channel().supports_member_kills)
        except Exception:
            return False

    # -- submission -------------------------------------------------------------------------------

    def submit(
        self,
        command: str,
        requested: Mapping[str, Any],
        array_length: int,
        submit_elements: Callable[[str, dict[str, Any], int], Mapping[int, str]],
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> dict[int, str] | None:
        """Submit the array packed and map each step to its member's id; None when the
        request asks for no packing (or only one member would fit): submit it as it is.
        `kill_grace` is the wrappers' (`--kill-grace`)."""
        members = members_per_element(requested, array_length)
        if members < 2 or not self.can_pack():
            return None
        array_id, batch = array_coordinates(command)
        elements = math.ceil(array_length / members)
        element_command = f"{command} --pack {members} --array-length {int(array_length)}"
        resources = element_resources(requested, members, kill_grace)
        ids = submit_elements(element_command, resources, elements)
        steps: dict[int, str] = {}
        for step in range(array_length):
            element = str(ids[step // members])
            member = f"{element}{MEMBER_SEPARATOR}{array_id}.{batch}.{step}"
            steps[step] = member
            self._members.setdefault(element, set()).add(member)
        return steps

    # -- status -----------------------------------------------------------------------------------

    def submitted_or_running(
        self, distributor_ids: Iterable[str], query: Callable[[list[str]], set[str]]
    ) -> set[str]:
        """`query` (the backend's, per element or plain id) answered per member."""
        members = {job: split_member_id(job) for job in distributor_ids}
        plain = [job for job, member in members.items() if member is None]
        elements = sorted({member.element for member in members.values() if member is not None})
        present = query(plain + elements)
        return {
            job
            for job, member in members.items()
            if (member is None and job in present)
            or (member is not None and member.element in present and job not in self.killed)
        }

    def queueing_errors(
        self, distributor_ids: Iterable[str], query: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, str]:
        """`query` (the backend's stuck jobs and why) answered per member: a member waits as
        long as its element does."""
        members = {job: split_member_id(job) for job in distributor_ids}
        asked = sorted({job if m is None else m.element for job, m in members.items()})
        stuck = query(asked)
        return {
            job: stuck[key]
            for job, member in members.items()
            if (key := job if member is None else member.element) in stuck
            and job not in self.killed
        }

    def exit_info(
        self, distributor_id: str, element_info: Callable[[str], RemoteExitInfo]
    ) -> RemoteExitInfo:
        member = split_member_id(distributor_id)
        if member is None:
            return element_info(distributor_id)
        info = element_info(member.element)
        if not info.finalized:
            return info
        if distributor_id in self.killed:
            message = f"killed on request (a member of the packed job {member.element})"
            record = ExitRecord(ExitReason.CANCELLED, message=message)
            return RemoteExitInfo(ErrorState.KILL_SELF, message, record=record)
        try:
            was_running = self.channel().member_running(member.key)
        except Exception as exc:
            return RemoteExitInfo.unknown(f"its running mark cannot be read: {exc}")
        if was_running:
            return info  # the element ended while this member ran: its fate is the member's
        return RemoteExitInfo.unknown(
            f"it never started: its packed job {member.element} ended first "
            f"({info.error_state.value}: {info.error_message})"
        )

    # -- kills ------------------------------------------------------------------------------------

    def terminate(
        self,
        distributor_ids: Iterable[str],
        kill_elements: Callable[[list[str]], None],
        element_active: Callable[[str], bool],
    ) -> None:
        """Kill members through the channel (whole elements through the backend, when every
        member of one is killed) and plain ids through the backend; return once no killed
        member runs."""
        plain: list[str] = []
        doomed: list[Member] = []
        for job in distributor_ids:
            member = split_member_id(job)
            if member is None:
                plain.append(job)
            else:
                doomed.append(member)
                self.killed.add(job)
        whole = sorted(
            element
            for element in {member.element for member in doomed}
            if self._members.get(element) and self._members[element] <= self.killed
        )
        if plain or whole:
            kill_elements(plain + whole)
        if not doomed:
            return
        channel = self.channel()
        waiting = []
        for member in doomed:
            if member.element in whole:
                continue
            channel.request_member_kill(member.key)
            # The worker marks a member running before it looks for a kill request, and this
            # looks for the mark after writing the request: a member that is not marked now
            # will be skipped, and only a running one is waited for.
            if channel.member_running(member.key):
                waiting.append(member)
        deadline = time.monotonic() + KILL_WAIT
        while waiting and time.monotonic() < deadline:
            waiting = [
                member
                for member in waiting
                if channel.member_running(member.key) and element_active(member.element)
            ]
            if waiting:
                time.sleep(_KILL_POLL)  # the worker's unmarking is a file, not an event
