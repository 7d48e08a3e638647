"""`jobfleet-worker-node slot`: a long-lived worker that runs task after task for a local
distributor.

    jobfleet-worker-node slot --cluster NAME --host-url URL [--kill-grace S] [--cgroup MODE]

It reads one JSON message per line on stdin and writes one per line on stdout:

    {"op": "run", "id": DISTRIBUTOR_ID, "step": N|null, "gpus": "0,1"|null, "args": [...]}
    {"op": "kill", "id": DISTRIBUTOR_ID}          -> stop that task (it reports K)
    <- {"op": "done", "id": DISTRIBUTOR_ID, "code": EXIT_CODE}

`args` are the worker-node arguments of a one-shot run (`job --task-instance-id N`, `array
--array-id A --batch-number B`). Each task gets every guarantee of a one-shot wrapper (it is
the same `TaskRunner`): its own session, cgroup where asked, limits, usage, exit record, a
durable final report, and its whole process tree ended before `done`. Tasks are forked by a
small shell fork server (`forkserver.py`), not from Python, so `true` reports ~1.5 MiB.

End-of-file on stdin (the distributor stopped, or its host died) ends the worker once the task
it runs, if any, has ended and reported; a task sent but not started by then is not run (its
host may have been restarted and found no trace of it: it will run it again). Each running task
is shown by a memfd the worker holds open until `done` (`running_marker`), so that a restarted
host's distributor finds it running even when its processes are gone and its final report is
still on its way. SIGTERM or SIGINT stops the running task (reported K,
as a one-shot wrapper does) and then the worker; SIGUSR1/2 go to the running task.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from jobfleet.core import process_tree, wrapper
from jobfleet.core.channel import Channel, EventWriter, TaskSpec
from jobfleet.core.local.slots import SLOT_MARKER, SLOT_WORK_DIR, running_marker
from jobfleet.core.private import open_private
from jobfleet.core.worker_node_protocol import ClusterWorkerNode
from jobfleet.worker_node import cli
from jobfleet.worker_node.cgroup import CgroupInfo, TaskCgroup, current_memory_cgroup
from jobfleet.worker_node.forkserver import ForkServer, usable_environment
from jobfleet.worker_node.output import TAIL_CHARACTERS
from jobfleet.worker_node.runner import FORWARDED_SIGNALS, STOPPING_SIGNALS, RunOptions, TaskRunner

_TAG = "JOBFLEET_DISTRIBUTOR_ID"
_STEP = "JOBFLEET_ARRAY_STEP_ID"
_GPUS = "CUDA_VISIBLE_DEVICES"
_ENCLOSING: list[CgroupInfo | None] = []
"""The worker's own limited memory cgroup (or None), once looked up."""
_IDLE_POLL = 0.5
"""Seconds between two looks at the stop flag while idle (a signal handler only sets it)."""


def serve(args: Any, channel: Channel) -> int:
    """Run tasks from stdin until end-of-file or a stopping signal; 0 when it ended cleanly."""
    return Slot(args, channel).serve()


class Slot:
    def __init__(self, args: Any, channel: Channel) -> None:
        self.args = args
        self.channel = channel
        self.exiting = False
        self._lock = threading.Lock()
        self._work: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._current: str | None = None
        self._runner: SlotTaskRunner | None = None
        self._cancelled: set[str] = set()
        os.environ.pop(SLOT_MARKER, None)  # stays in /proc/<pid>/environ, not in tasks'
        self._environ: dict[str, str] = {}
        # The protocol's pipes get descriptors of their own; 0 and 1 become /dev/null and
        # stderr, so nothing else that prints (or a task) can write into the protocol.
        self._requests = os.fdopen(os.dup(0), "rb")
        self._replies = os.dup(1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        # Its launch files and output scratch: in the distributor's work directory when it
        # names one (removed with it, even after a crash), else in the temp dir. 0700.
        work_dir = os.environ.pop(SLOT_WORK_DIR, None) or None
        self.scratch = tempfile.mkdtemp(prefix="jobfleet-slot-", dir=work_dir)
        self.server: ForkServer | None = None

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> int:
        process_tree.become_subreaper()  # before the fork server forks a task: they are ours
        for number in FORWARDED_SIGNALS:
            signal.signal(number, self._on_signal)
        threading.Thread(
            target=self._read_requests, name="jobfleet-slot-reader", daemon=True
        ).start()
        try:
            while not self.exiting:
                request = self._next_request()
                if request is None:
                    break
                # Held open until `done`: a restarted host's distributor sees by it that this
                # instance still runs while its final report is on its way (its task is gone).
                marker = os.memfd_create(running_marker(str(request["id"])), os.MFD_CLOEXEC)
                if self._distributor_gone():
                    # Sent, but not started before its host died: a restarted host may have
                    # looked already and found nothing of it, and will run it again. Only
                    # what started while the host lived (and so showed its marker) runs.
                    os.close(marker)
                    break
                try:
                    code = self._run_one(request)
                    replied = self._reply({"op": "done", "id": request["id"], "code": code})
                finally:
                    os.close(marker)
                if not replied:
                    break  # nobody listens any more: the report went through the channel
        finally:
            if self.server is not None:
                self.server.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
        return 0

    def _distributor_gone(self) -> bool:
        """Whether every writer of our stdin is gone (the pipe hung up), unread lines or not."""
        poller = select.poll()
        poller.register(self._requests.fileno(), select.POLLIN)
        return any(events & select.POLLHUP for _fd, events in poller.poll(0))

    def _next_request(self) -> dict[str, Any] | None:
        while not self.exiting:
            try:
                return self._work.get(timeout=_IDLE_POLL)
            except queue.Empty:
                continue
        return None

    def _read_requests(self) -> None:
        for line in self._requests:
            try:
                message = json.loads(line)
                op, distributor_id = message["op"], str(message["id"])
            except (ValueError, KeyError, TypeError):
                _say(f"a request that is no request was ignored: {line[:200]!r}")
                continue
            if op == "run":
                self._work.put(message)
            elif op == "kill":
                self.kill(distributor_id)
            else:
                _say(f"an unknown request was ignored: {op!r}")
        self._work.put(None)  # end-of-file: finish the current task, then leave

    def _reply(self, message: dict[str, Any]) -> bool:
        try:
            os.write(self._replies, json.dumps(message).encode() + b"\n")
        except OSError:
            return False
        return True

    # -- stopping a task --------------------------------------------------------------------

    def kill(self, distributor_id: str, number: int = signal.SIGTERM) -> None:
        """Stop the task with this id, now if it runs, else as soon as it starts."""
        with self._lock:
            if self._current != distributor_id:
                return  # ended already: its `done` is on its way
            runner = self._runner
            if runner is None:
                self._cancelled.add(distributor_id)
                return
        runner.stop(number)

    def _on_signal(self, number: int, _frame: object) -> None:
        if number in STOPPING_SIGNALS:
            self.exiting = True
        current = self._current
        if current is not None:
            runner = self._runner
            if runner is not None:
                runner.stop(number)
            elif number in STOPPING_SIGNALS:
                self._cancelled.add(current)

    # -- one task ---------------------------------------------------------------------------

    def _run_one(self, request: dict[str, Any]) -> int:
        distributor_id = str(request["id"])
        step, gpus = request.get("step"), request.get("gpus")
        # What the worker node reads (its distributor id, the array step) and what the task
        # inherits through the runner, for this task only. Never put into os.environ: glibc's
        # setenv keeps every value it was ever given, so a new id per task would leak.
        environ = dict(os.environ)
        environ[_TAG] = distributor_id
        environ[_STEP] = "" if step is None else str(step)
        if gpus is not None:
            environ[_GPUS] = str(gpus)
        self._environ = environ
        argv = [str(word) for word in request.get("args", [])]
        argv += ["--cluster", self.args.cluster, "--host-url", self.args.host_url]
        argv += ["--kill-grace", str(self.args.kill_grace), "--cgroup", self.args.cgroup]
        with self._lock:
            self._current, self._runner = distributor_id, None
        try:
            task_args = cli.parse_args(argv)
            if task_args.mode not in ("job", "array"):
                _say(f"run {distributor_id}: {argv[0]!r} is no task mode (job or array)")
                return wrapper.USAGE_ERROR
            return cli.run_task(task_args, self.channel, self._make_runner, self._environ)
        except SystemExit as exc:  # argparse refused the arguments, and said why
            return exc.code if isinstance(exc.code, int) else wrapper.USAGE_ERROR
        finally:
            with self._lock:
                self._current, self._runner = None, None
                self._cancelled.discard(distributor_id)

    def _make_runner(
        self, spec: TaskSpec, node: ClusterWorkerNode, writer: EventWriter, options: RunOptions
    ) -> TaskRunner:
        if self.server is None or self.server.dead:
            if self.server is not None:
                self.server.close()
            self.server = ForkServer()
        runner = SlotTaskRunner(
            spec, node, writer, options, self.server, self.scratch, self._environ
        )
        with self._lock:
            self._runner = runner
            if self._current in self._cancelled:
                runner.stop(signal.SIGTERM)
        return runner


class _Launched:
    """What the runner needs of a started task's `Popen`: its pid and, once waited, its code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = None
        self.stderr = None


class _OutputFile:
    """A stream the task writes straight into a file; its tail is read once it has ended.

    Stands where the one-shot runner has an `OutputPump`: with no pipe, there is nothing to
    pump, and no thread per stream.
    """

    def __init__(self, path: str, offset: int, scratch: bool) -> None:
        self.path = path
        self.offset = offset
        self.scratch = scratch
        self.log_error: str | None = None
        self.tail = _Text("")

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        """Read the tail (what this run added to the file); empty a scratch file."""
        limit = 4 * TAIL_CHARACTERS  # enough bytes for that many characters of UTF-8
        try:
            with open(self.path, "rb") as stream:
                end = stream.seek(0, os.SEEK_END)
                start = max(self.offset, end - limit)
                stream.seek(start)
                data = stream.read(end - start)
            if start > self.offset:  # cut inside the file: skip a character's tail bytes
                data = data.lstrip(bytes(range(0x80, 0xC0)))
            self.tail = _Text(data.decode("utf-8", errors="replace")[-TAIL_CHARACTERS:])
            if self.scratch:
                os.truncate(self.path, 0)
        except OSError as exc:
            self.log_error = f"reading the output of {self.path} failed: {exc}"


class _Text:
    def __init__(self, text: str) -> None:
        self._text = text

    def text(self) -> str:
        return self._text


class SlotTaskRunner(TaskRunner):
    """The one-shot `TaskRunner`, with the task started by the fork server, its output
    written straight to files, and the fork server left out of what is measured and killed.
    Signal handlers are the slot's, which hands them to `stop()`."""

    def __init__(
        self,
        spec: TaskSpec,
        node: ClusterWorkerNode,
        writer: EventWriter,
        options: RunOptions,
        server: ForkServer,
        scratch: str,
        environ: Mapping[str, str],
    ) -> None:
        super().__init__(spec, node, writer, options)
        self.server = server
        self.scratch = scratch
        self.environ = environ
        self._outputs: list[_OutputFile] = []
        self._launch_file: str | None = None

    def run(self) -> int:
        try:
            return super().run()
        finally:
            if self._launch_file is not None:  # it holds the task's environment
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._launch_file)

    def stop(self, number: int) -> None:
        """Do what the one-shot wrapper does when it gets signal `number`."""
        self._on_signal(number, None)

    def _install_signal_handlers(self) -> None:
        pass  # the slot's handlers stay, and call stop()

    def _enclosing_cgroup(self) -> TaskCgroup | None:
        # The worker's own cgroup does not change between its tasks: looked up once (its
        # counters are read afresh through the TaskCgroup each time).
        if not _ENCLOSING:
            info = current_memory_cgroup()
            _ENCLOSING.append(info if info is not None and info.has_limit else None)
        info = _ENCLOSING[0]
        return TaskCgroup.open(info) if info is not None else None

    def _fork_floor(self) -> int | None:
        return self.server.rss()

    def _inherited_environment(self) -> Mapping[str, str]:
        return self.environ

    def _not_the_task(self) -> frozenset[int]:
        return frozenset({os.getpid(), self.server.pid})

    def _prepare_logs(self) -> dict[str, str | None]:
        paths = super()._prepare_logs()
        self._outputs = [
            self._output_file(stream, paths[stream]) for stream in ("stdout", "stderr")
        ]
        return paths

    def _output_file(self, stream: str, log_path: str | None) -> _OutputFile:
        if log_path is not None and log_path != os.devnull:
            # Created by the worker node (owner-only); the task appends to it, as a pump would.
            return _OutputFile(log_path, os.stat(log_path).st_size, scratch=False)
        # No log kept: the output still gives the report its tail, from a private file.
        path = os.path.join(self.scratch, stream)
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        return _OutputFile(path, 0, scratch=True)

    def _start(self, cgroup: TaskCgroup | None) -> Any:
        environment = usable_environment(self._environment())
        # Read by the task's shell after launch() returns: removed once the task has ended.
        launch_file = os.path.join(self.scratch, f"launch-{self.spec.task_instance_id}")
        self._launch_file = launch_file
        script = self.server.launch_script(
            self.spec.command,
            environment,
            self._outputs[0].path,
            self._outputs[1].path,
            os.path.join(cgroup.path, "cgroup.procs") if cgroup is not None else None,
        )
        fd = open_private(launch_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(script)
        return _Launched(self.server.launch(launch_file))

    def _start_pumps(self, process: Any, log_paths: dict[str, str | None]) -> Any:
        return self._outputs

    def _end_everything(self, process: Any, cgroup: TaskCgroup | None) -> list[Any]:
        """As the one-shot runner, but the fork server lives on, and is not waited for."""
        process_tree.signal_group(process.pid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill_all(signal.SIGKILL)
        server = self.server.pid
        process_tree.kill_pids([pid for pid in process_tree.descendant_pids() if pid != server])
        return _reap_all_but(server, self.server, deadline=time.monotonic() + 5)


def _reap_all_but(keep: int, server: ForkServer, deadline: float) -> list[Any]:
    """Reap every child but the fork server until none is left or `deadline` passes."""
    usages: list[Any] = []
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return usages
        if pid == keep:
            server.dead = True  # it died (reaped here, its Popen cannot know): start another
        elif pid:
            usages.append(usage)
        elif time.monotonic() >= deadline or not [
            child for child in process_tree.descendant_pids() if child != keep
        ]:
            return usages
        else:
            time.sleep(0.01)  # children we killed are still dying; nothing to wait on but time


def _say(message: str) -> None:
    sys.stderr.write(f"jobfleet-worker-node slot: {message}\n")
    sys.stderr.flush()


__all__ = ["SLOT_MARKER", "Slot", "SlotTaskRunner", "serve"]
