"""The pack worker: one array element that runs several task instances one after another.

Started by `jobfleet-worker-node array … --pack K --array-length N` (see jobfleet.core.packing):
element e runs steps e*K … e*K+K-1 below N. Each member is a task instance of its own, run by
`TaskRunner` with its own writer, so it sends its own running and final reports, usage and exit
record; a member's failure (exit status, out of memory, runtime) never stops the next.

Kills come two ways:
- the host kills one member through the channel: a member asked for before it starts is
  skipped (the host ends it itself), one asked for while it runs is stopped like a wrapper
  told SIGTERM, and reported killed; the others go on. Around each member the worker sets its
  running mark (`Channel.mark_member_running`) before looking for a request, so that a host
  that finds no mark after asking knows the member will be skipped;
- the backend cancels the element (SIGTERM): the running member is stopped and reported, the
  rest are left unreported, so the host sees them gone and retries them (U).
"""

from __future__ import annotations

import signal
import sys
import threading

from jobfleet.core.channel import Channel, TaskSpec, member_key
from jobfleet.core.errors import ChannelError, JobfleetError
from jobfleet.core.worker_node_protocol import ClusterWorkerNode
from jobfleet.worker_node.runner import FORWARDED_SIGNALS, STOPPING_SIGNALS, RunOptions, TaskRunner

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the wrapper's start path
    from typing import Any

KILL_CHECK_INTERVAL = 0.5
"""Seconds between two looks for a kill request while a member runs (one stat on a file
channel)."""

MEMBER_SEPARATOR = "+"  # jobfleet.core.packing.MEMBER_SEPARATOR, not imported: kept light


class _MemberNode:
    """The element's worker node, except that it gives the member's own id (so that the host
    records it from the running report, and kills and exit info reach this member only)."""

    def __init__(self, node: ClusterWorkerNode, distributor_id: str) -> None:
        self._node = node
        self._distributor_id = distributor_id

    @property
    def distributor_id(self) -> str:
        return self._distributor_id

    def initialize_logfile(self, log_type: str, log_dir: str | None, name: str) -> str:
        if type(self._node).initialize_logfile is ClusterWorkerNode.initialize_logfile:
            # The shared way, with the member's id in the file name: members of one element
            # never write to one file.
            return ClusterWorkerNode.initialize_logfile(self, log_type, log_dir, name)
        return self._node.initialize_logfile(log_type, log_dir, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


class _Element:
    """The element's own state: whether the backend told it to stop."""

    def __init__(self) -> None:
        self.stopped_by: int | None = None

    def install(self) -> None:
        # Between members (a runner installs its own handlers while its member runs).
        for number in FORWARDED_SIGNALS:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: object) -> None:
        if number in STOPPING_SIGNALS:
            self.stopped_by = number


def run_pack(args: Any, channel: Channel, node: ClusterWorkerNode, element: int | None) -> int:
    """Run this element's members; the exit code is 0 unless the element was stopped."""
    if element is None:
        raise ChannelError(
            f"The {args.cluster} worker node found no array step in this job's environment, "
            "so it cannot tell which members of the packed array to run."
        )
    if args.array_length is None:
        raise ChannelError("--pack needs --array-length (the array's number of steps).")
    first = element * args.pack
    steps = range(first, min(first + args.pack, args.array_length))
    specs = channel.get_array_steps(args.array_id, args.batch_number, steps)
    state = _Element()
    state.install()
    element_id = node.distributor_id or f"element-{element}"
    for step in steps:
        if state.stopped_by is not None:
            break  # the rest stay unreported: the host sees them gone and retries them
        spec = specs.get(step)
        if spec is None:
            _say(f"array {args.array_id} batch {args.batch_number} has no step {step}")
            continue
        key = member_key(args.array_id, args.batch_number, step)
        member = _MemberNode(node, f"{element_id}{MEMBER_SEPARATOR}{key}")
        options = RunOptions(kill_grace=args.kill_grace, array_step=step, cgroup=args.cgroup)
        stopped = _run_member(channel, key, spec, member, options, state)
        state.install()
        if stopped is not None and state.stopped_by is None:
            state.stopped_by = stopped
    return 0 if state.stopped_by is None else 128 + state.stopped_by


def _run_member(
    channel: Channel,
    key: str,
    spec: TaskSpec,
    node: _MemberNode,
    options: RunOptions,
    element: _Element,
) -> int | None:
    """Run one member (unless the host killed it first); the signal that stopped the element
    while it ran, if one did."""
    channel.mark_member_running(key, True)
    try:
        if channel.member_kill_requested(key):
            return None  # killed before it started: the host ends it K itself
        if element.stopped_by is not None:
            return None  # the element was told to stop as this member came up: leave it
        writer = channel.open_writer(spec.task_instance_id)
        writer.run_token = spec.run_token
        runner = TaskRunner(spec, node, writer, options)
        done = threading.Event()
        killed = threading.Event()
        watcher = threading.Thread(
            target=_watch_kill,
            args=(channel, key, runner, done, killed),
            name="jobfleet-pack-kill",
            daemon=True,
        )
        watcher.start()
        try:
            runner.run()
        except JobfleetError as exc:
            _report_failure(writer, "F", f"{type(exc).__name__}: {exc}")
        except Exception:
            import traceback

            _report_failure(writer, "U", "the pack worker failed:\n" + traceback.format_exc())
        finally:
            done.set()
            watcher.join(timeout=5)
            writer.close()
        # The runner's own record of a stop (a private field: runner.py stays as it is).
        cancelled = runner._run.cancelled_by
        return cancelled if cancelled is not None and not killed.is_set() else None
    finally:
        # Only once the member's final report is durable: the host waits for this.
        channel.mark_member_running(key, False)


def _watch_kill(
    channel: Channel,
    key: str,
    runner: TaskRunner,
    done: threading.Event,
    killed: threading.Event,
) -> None:
    """Stop the member, as SIGTERM would, once the host asks for it."""
    while not done.wait(KILL_CHECK_INTERVAL):
        try:
            asked = channel.member_kill_requested(key)
        except Exception:  # noqa: S112 - a failed look is retried at the next interval
            continue
        if asked:
            killed.set()
            runner._on_signal(signal.SIGTERM, None)  # the runner's own stop, as on SIGTERM
            return


def _report_failure(writer: Any, state: str, message: str) -> None:
    _say(message)
    from jobfleet.core.channel import FinalReport
    from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord

    record = ExitRecord(ExitReason.LAUNCHER_ERROR, message=message)
    try:
        writer.send_report(FinalReport(ErrorState(state), message, exit=record), durable=True)
    except Exception as exc:  # nothing left to report through
        _say(f"the final report could not be sent either: {exc}")


def _say(message: str) -> None:
    sys.stderr.write(f"jobfleet-worker-node (pack): {message}\n")
    sys.stderr.flush()


__all__ = ["KILL_CHECK_INTERVAL", "run_pack"]
