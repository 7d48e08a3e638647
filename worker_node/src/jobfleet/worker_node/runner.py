"""Running one task instance on its node, from spec to final report.

The order matters: logs and cgroup are prepared before the command starts (so a failure is
reported without running anything), the command starts gated until it is inside its cgroup,
everything it leaves behind is killed before the final report, and the final report is sent
whatever happened in between.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
import time

from jobfleet.core import process_tree
from jobfleet.core.channel import (
    EventWriter,
    FinalReport,
    HeartbeatReport,
    RunningReport,
    TaskSpec,
    UsageReport,
)
from jobfleet.core.errors import ChannelError, JobfleetError
from jobfleet.core.exit_info import ErrorState, ExitRecord
from jobfleet.core.wrapper import DEFAULT_CGROUP, DEFAULT_KILL_GRACE, without_host_variables
from jobfleet.worker_node import phases
from jobfleet.worker_node.cgroup import TaskCgroup, current_memory_cgroup
from jobfleet.worker_node.outcome import Observation, classify
from jobfleet.worker_node.output import OutputPump
from jobfleet.worker_node.sampler import TreeSample, TreeSampler
from jobfleet.worker_node.termination import write_termination_log
from jobfleet.worker_node.usage import combine, current_rss, gpu_usage, rusage_sum

# The type checker's only: typing, dataclasses and the backend protocols are not imported by
# the wrapper before a task (issue 16: a lean start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from jobfleet.core.worker_node_protocol import ClusterWorkerNode

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
STOPPING_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

# The command starts behind this gate: the shell waits for end-of-file on its stdin (a pipe the
# wrapper closes once the shell is inside the task's cgroup), so nothing the command forks can
# escape the cgroup's limit and accounting. The command is passed as an argument ($1), never
# pasted into the script, and runs with stdin from /dev/null like every task.
_GATE = 'read _; exec /bin/sh -c "$1" </dev/null'


class RunOptions:
    """How the wrapper treats the task, beyond what the spec says.

    `kill_grace`: seconds between SIGTERM and SIGKILL when stopping the task. `cgroup`: "auto"
    (a memory cgroup of its own when the spec limits memory), "always" or "never".
    """

    def __init__(
        self,
        kill_grace: float = DEFAULT_KILL_GRACE,
        array_step: int | None = None,
        cgroup: str = DEFAULT_CGROUP,
    ) -> None:
        self.kill_grace = kill_grace
        self.array_step = array_step
        self.cgroup = cgroup

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"RunOptions({shown})"


class _Run:
    """The mutable state of one run, shared with signal handlers and timer threads."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.timed_out = False
        self.cancelled_by: int | None = None
        self.memory_enforced = False
        self.finished = threading.Event()


class TaskRunner:
    """Runs one spec under one backend's worker node and reports through one writer."""

    def __init__(
        self,
        spec: TaskSpec,
        node: ClusterWorkerNode,
        writer: EventWriter,
        options: RunOptions | None = None,
    ) -> None:
        self.spec = spec
        self.node = node
        self.writer = writer
        self.options = options or RunOptions()
        self._run = _Run()
        self._hostname = os.uname().nodename

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> int:
        """Run the task and send its final report; returns the wrapper's exit code."""
        log_paths = self._prepare_logs()
        cgroup, cgroup_note = self._make_cgroup()
        try:
            return self._run_command(log_paths, cgroup, cgroup_note)
        finally:
            if cgroup is not None:
                cgroup.remove()

    def _prepare_logs(self) -> dict[str, str | None]:
        """The log file of each stream; raises (and so fails the run) when one cannot be made."""
        paths: dict[str, str | None] = {}
        for stream, directory in (
            ("stdout", self.spec.stdout_dir),
            ("stderr", self.spec.stderr_dir),
        ):
            if directory is None:
                paths[stream] = None
                continue
            try:
                paths[stream] = self.node.initialize_logfile(stream, directory, self.spec.name)
            except OSError as exc:
                raise LogDirectoryError(stream, directory, exc) from exc
        return paths

    def _make_cgroup(self) -> tuple[TaskCgroup | None, str]:
        mode = self.options.cgroup
        if mode == "never" or (mode == "auto" and self.spec.memory is None):
            # Without a limit to enforce, sampling measures within a few percent and the
            # subreaper catches escaped processes; a cgroup would add ~20 ms to every task.
            return None, f"not used (--cgroup {mode})"
        name = f"jobfleet-ti{self.spec.task_instance_id}"
        return TaskCgroup.try_create(name, self.spec.memory)

    def _run_command(
        self, log_paths: dict[str, str | None], cgroup: TaskCgroup | None, cgroup_note: str
    ) -> int:
        enclosing = self._enclosing_cgroup()
        enclosing_ooms = enclosing.oom_kills() if enclosing is not None else 0
        subreaper = process_tree.become_subreaper()
        wrapper_rss = self._fork_floor()
        started_at = time.monotonic()
        self._install_signal_handlers()
        phases.mark("prepare")
        try:
            process = self._start(cgroup)
        except OSError as exc:
            return self._report_not_started(str(exc), log_paths)
        phases.mark("fork/exec")
        self._run.process = process
        if self._run.cancelled_by is not None:  # told to stop while the command was starting
            process_tree.signal_group(process.pid, self._run.cancelled_by)
            self._stop_later(process.pid)
        self._send_running(process, log_paths)
        pumps = self._start_pumps(process, log_paths)
        # Rooted at the wrapper (excluded from the sums): as a subreaper it adopts every orphan
        # of the task, so daemons that left the task's tree are still measured.
        sampler = TreeSampler(
            os.getpid(), exclude_pids=self._not_the_task(), root_is_subreaper=subreaper
        )
        helpers: list[threading.Thread | None] = []
        # The sampler's first sample would come after its first interval: a task that ends
        # within it (most short tasks) gets no sampler thread and no timer threads at all, and
        # stop() below still takes the one last sample a started sampler would take.
        if not _ended_within(process.pid, sampler.first_interval):
            sampler.start()
            helpers = [
                self._start_heartbeats(sampler),
                self._start_deadline(started_at),
                self._start_memory_guard(sampler, cgroup),
            ]
        phases.mark("running report, threads")
        status, usage = self._wait(process)
        self._run.finished.set()
        phases.mark("wait")
        wallclock = time.monotonic() - started_at
        orphan_usages = self._end_everything(process, cgroup)
        for pump in pumps:
            pump.stop()
            pump.join(timeout=5)
        for helper in helpers:
            if helper is not None:
                helper.join(timeout=5)
        sample = sampler.stop()
        phases.mark("end, reap, sampler stop")
        seen = Observation(
            wait_status=status,
            timed_out=self._run.timed_out,
            cancelled_by=self._run.cancelled_by,
            oom_kills=(cgroup.oom_kills() if cgroup is not None else 0)
            + (enclosing.oom_kills() - enclosing_ooms if enclosing is not None else 0),
            memory_enforced=self._run.memory_enforced,
            memory_limit=self.spec.memory or (enclosing.limit() if enclosing is not None else None),
            memory_peak=_peak(sample, cgroup),
        )
        notes = [pump.log_error for pump in pumps if pump.log_error]
        usage_report = self._usage(
            sample, [usage, *orphan_usages], wallclock, cgroup, wrapper_rss, cgroup_note, notes
        )
        record = classify(seen)
        tails = (pumps[0].tail.text(), pumps[1].tail.text())
        phases.mark("usage, classify")
        self._send_final(record, usage_report, tails, log_paths, notes)
        phases.mark("final report")
        return _exit_code(status)

    # -- what a runner that starts tasks another way (worker_node/slot.py) replaces ------------

    def _inherited_environment(self) -> Mapping[str, str]:
        """The environment the backend gave this run (the process's, for a one-shot wrapper)."""
        return os.environ

    def _fork_floor(self) -> int | None:
        """The RSS of the process the task is forked from: a child's ru_maxrss starts there."""
        return current_rss()

    def _enclosing_cgroup(self) -> TaskCgroup | None:
        """The limited memory cgroup the wrapper itself runs in, if any."""
        return _enclosing_cgroup()

    def _not_the_task(self) -> frozenset[int]:
        """Processes of the wrapper's tree that are not the task's (never measured)."""
        return frozenset({os.getpid()})

    # -- starting -----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The wrapper's environment without the host's own variables, the task's `env`, and
        the variables that tell the task who it is (docs/security.md lists them)."""
        env = without_host_variables(self._inherited_environment())
        env.update(self.spec.environment)
        env["JOBFLEET_TASK_INSTANCE_ID"] = str(self.spec.task_instance_id)
        env["JOBFLEET_RUN_ID"] = "" if self.spec.run_id is None else str(self.spec.run_id)
        step = self.options.array_step
        env["JOBFLEET_ARRAY_STEP_ID"] = "" if step is None else str(step)
        return env

    def _start(self, cgroup: TaskCgroup | None) -> subprocess.Popen[bytes]:
        common: dict[str, Any] = {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "env": self._environment(),
            "start_new_session": True,
        }
        if cgroup is None:
            return subprocess.Popen(["/bin/sh", "-c", self.spec.command], **common)
        gate_read, gate_write = os.pipe()
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", _GATE, "jobfleet-task", self.spec.command],
                **{**common, "stdin": gate_read},
            )
        except OSError:
            os.close(gate_write)
            raise
        finally:
            os.close(gate_read)
        try:
            cgroup.add_pid(process.pid)
        except OSError:
            # Never let the command run outside the limits it was promised.
            process.kill()
            process.wait()
            raise
        finally:
            os.close(gate_write)  # end-of-file on the gate's stdin lets the command start
        return process

    def _send_running(
        self, process: subprocess.Popen[bytes], log_paths: dict[str, str | None]
    ) -> None:
        report = RunningReport(
            hostname=self._hostname,
            pid=process.pid,
            wrapper_pid=os.getpid(),
            distributor_id=self.node.distributor_id,
            stdout_path=log_paths["stdout"],
            stderr_path=log_paths["stderr"],
        )
        self.writer.send_report(report)

    def _start_pumps(
        self, process: subprocess.Popen[bytes], log_paths: dict[str, str | None]
    ) -> list[OutputPump]:
        assert process.stdout is not None
        assert process.stderr is not None
        pumps = [
            OutputPump(process.stdout.fileno(), log_paths["stdout"], "stdout"),
            OutputPump(process.stderr.fileno(), log_paths["stderr"], "stderr"),
        ]
        for pump in pumps:
            pump.start()
        return pumps

    # -- while it runs ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for number in FORWARDED_SIGNALS:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: object) -> None:
        process = self._run.process
        if number in STOPPING_SIGNALS and self._run.cancelled_by is None:
            self._run.cancelled_by = number
            if process is not None:
                self._stop_later(process.pid)
        if process is not None:
            process_tree.signal_group(process.pid, number)

    def _stop_later(self, pgid: int) -> None:
        """SIGKILL the group after the grace period unless the task ended by then."""

        def escalate() -> None:
            if not self._run.finished.wait(self.options.kill_grace):
                process_tree.signal_group(pgid, signal.SIGKILL)

        threading.Thread(target=escalate, name="jobfleet-kill", daemon=True).start()

    def _start_heartbeats(self, sampler: TreeSampler) -> threading.Thread:
        # A thread of its own, so that neither a silent task nor a flood of output delays it.
        def beat() -> None:
            while not self._run.finished.wait(self.spec.heartbeat_interval):
                try:
                    self.writer.send_report(HeartbeatReport(rss=sampler.current_bytes))
                except Exception:  # noqa: S112 - a lost heartbeat must not stop the task
                    continue

        thread = threading.Thread(target=beat, name="jobfleet-heartbeat", daemon=True)
        thread.start()
        return thread

    def _start_deadline(self, started_at: float) -> threading.Thread | None:
        """The runtime limit, counted from `started_at` (when the command was started)."""
        runtime = self.spec.runtime
        process = self._run.process
        if runtime is None or process is None:
            return None

        def expire() -> None:
            if self._run.finished.wait(max(0.0, started_at + runtime - time.monotonic())):
                return
            self._run.timed_out = True
            process_tree.signal_group(process.pid, signal.SIGTERM)
            if not self._run.finished.wait(self.options.kill_grace):
                process_tree.signal_group(process.pid, signal.SIGKILL)

        thread = threading.Thread(target=expire, name="jobfleet-deadline", daemon=True)
        thread.start()
        return thread

    def _start_memory_guard(
        self, sampler: TreeSampler, cgroup: TaskCgroup | None
    ) -> threading.Thread | None:
        """Without a cgroup, enforce the memory limit by watching the sampled tree."""
        limit = self.spec.memory
        process = self._run.process
        if limit is None or cgroup is not None or process is None:
            return None

        def guard() -> None:
            while not self._run.finished.wait(0.05):
                current = sampler.current_bytes
                if current is not None and current > limit:
                    self._run.memory_enforced = True
                    process_tree.signal_group(process.pid, signal.SIGKILL)
                    process_tree.kill_pids(process_tree.descendant_pids())
                    return

        thread = threading.Thread(target=guard, name="jobfleet-memory-guard", daemon=True)
        thread.start()
        return thread

    def _wait(self, process: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage]:
        """Wait for the command itself; wait4 gives its raw status (core dumps) and usage."""
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return status, usage

    # -- ending -------------------------------------------------------------------------------

    def _end_everything(
        self, process: subprocess.Popen[bytes], cgroup: TaskCgroup | None
    ) -> list[resource.struct_rusage]:
        """Kill whatever the task left behind, in its group, its cgroup or adopted by us."""
        process_tree.signal_group(process.pid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill_all(signal.SIGKILL)
        process_tree.kill_pids(process_tree.descendant_pids())
        return process_tree.reap_orphans(deadline=time.monotonic() + 5)

    def _usage(
        self,
        sample: TreeSample,
        usages: list[resource.struct_rusage],
        wallclock: float,
        cgroup: TaskCgroup | None,
        wrapper_rss: int | None,
        cgroup_note: str,
        notes: list[str],
    ) -> UsageReport:
        stats = combine(
            sample=sample,
            children_rusage=rusage_sum(usages),
            wallclock=wallclock,
            cgroup_peak=cgroup.peak_bytes() if cgroup is not None else None,
            wrapper_rss_at_start=wrapper_rss,
            gpu=gpu_usage(self._inherited_environment()),
        )
        # Say why there was no cgroup (not asked for, or not possible here) next to the numbers.
        details = json.loads(stats["usage_str"])
        details["task_cgroup"] = str(cgroup.path) if cgroup is not None else cgroup_note
        stats["usage_str"] = json.dumps(details)
        measured = UsageReport.from_dict(stats)
        attach = getattr(self.node, "attach_usage", None)
        if attach is None:
            return measured
        attach(lambda: stats)
        try:
            return UsageReport.from_dict(self.node.get_usage_stats())
        except ChannelError as exc:
            # A backend's figures the host could not read: send the wrapper's own instead.
            notes.append(f"the worker node's usage was unusable, the wrapper's is sent: {exc}")
            return measured

    def _send_final(
        self,
        record: ExitRecord,
        usage: UsageReport | None,
        tails: tuple[str, str],
        log_paths: dict[str, str | None],
        notes: list[str],
    ) -> None:
        state, message = _error_state(self.node, record)
        if notes:
            message = f"{message} ({'; '.join(notes)})"
        report = FinalReport(
            error_state=state,
            message=message,
            exit=record,
            usage=usage,
            stdout_tail=tails[0],
            stderr_tail=tails[1],
            stdout_path=log_paths["stdout"],
            stderr_path=log_paths["stderr"],
            distributor_id=self.node.distributor_id,
            hostname=self._hostname,
        )
        write_termination_log(report)
        self.writer.send_report(report, durable=True)

    def _report_not_started(self, error: str, log_paths: dict[str, str | None]) -> int:
        record = classify(Observation(wait_status=None, start_error=error))
        self._send_final(record, None, ("", ""), log_paths, [])
        return 127


class LogDirectoryError(JobfleetError):
    """A log file could not be created where the spec says (retrying will not help)."""

    def __init__(self, stream: str, directory: str, cause: OSError) -> None:
        super().__init__(f"The {stream} log cannot be created in {directory}: {cause}")


def _error_state(node: ClusterWorkerNode, record: ExitRecord) -> tuple[ErrorState, str]:
    """Ask the backend: the structured way when it has it, Jobmon's way otherwise."""
    structured = getattr(node, "error_state_for", None)
    if structured is not None:
        state, message = structured(record)
    else:
        code = record.exit_code if record.exit_code is not None else 128 + (record.signal or 0)
        state, message = node.get_exit_info(code, record.message)
    return ErrorState(state), message


def _ended_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` (a child, not reaped here) ends within `seconds`.

    Through a pidfd (Linux 5.3 and later), which becomes readable when the process exits;
    False at once where there is none, so that the caller starts its watchers as before.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    finally:
        os.close(fd)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _enclosing_cgroup() -> TaskCgroup | None:
    """The limited memory cgroup a backend put the whole job in (Slurm, Kubernetes), if any.

    Its OOM counter tells an out-of-memory kill from any other SIGKILL; its peak is not used
    for maxrss, because it also holds the wrapper.
    """
    info = current_memory_cgroup()
    return TaskCgroup.open(info) if info is not None and info.has_limit else None


def _peak(sample: TreeSample, cgroup: TaskCgroup | None) -> int | None:
    if cgroup is not None:
        peak = cgroup.peak_bytes()
        if peak is not None:
            return int(peak)
    return sample.peak_bytes
