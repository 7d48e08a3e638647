"""The Slurm distributor: sbatch with a script file, one squeue per round, sacct for the rest.

What it never does (the failure modes of other Slurm integrations):
- poll each job: one `squeue` answers for all of this run's jobs (filtered by the run's tag
  and the user), on an adaptive interval with a hard rate limit;
- double-submit: every submission carries a fresh token in its comment, and after an sbatch
  timeout or error the token is looked up in squeue before anything is submitted again;
- take "gone from squeue" for success: a job that left squeue is "not running", and only
  sacct's final record says how it ended (one sacct call per round for all such jobs);
- paste text into a shell: the batch script holds one `exec` of the worker node, quoted, and
  every option goes to sbatch as its own argument.
"""

from __future__ import annotations

import hashlib
import math
import os
import pwd
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.polling import Poller
from jobfleet.core.queue import DEFAULT_QUEUE
from jobfleet.core.resources import ResourceRequest
from jobfleet.core.wrapper import CHANNEL_TOKEN_VARIABLE
from jobfleet.plugins.slurm import accounting
from jobfleet.plugins.slurm.commands import SlurmCommandError, SlurmCommands
from jobfleet.plugins.slurm.settings import SlurmSettings, extra_sbatch_options
from jobfleet.plugins.slurm.worker_node import OFFSET_VARIABLE

MIB = 1024 * 1024
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's own default

_SCANCEL_CHUNK = 500  # ids per scancel call, to keep the argv bounded
_SACCT_WINDOW = 7 * 86400
_KILL_WAIT = 60.0  # seconds terminate_task_instances waits for Slurm to end cancelled jobs
_OUTPUT_TAIL = 4096  # bytes of a job's output read for triage
_KILL_POLL = 0.2  # how far back sacct looks for jobs whose submission time is unknown


class SlurmDistributor(BaseClusterDistributor):
    """Submits worker-node wrappers as Slurm batch jobs and answers for them."""

    cluster_type = "slurm"
    settings_class = SlurmSettings
    settings: SlurmSettings

    def __init__(
        self,
        cluster_name: str,
        *args: Any,
        commands: SlurmCommands | None = None,
        **connection_parameters: Any,
    ) -> None:
        super().__init__(cluster_name, *args, **connection_parameters)
        self.commands = commands or SlurmCommands(self.settings.command_timeout)
        # Stable for a run (its channel): a resumed host finds the jobs of the one it replaces.
        source = self.host_url or cluster_name
        self.tag = "jobfleet-" + hashlib.sha256(source.encode()).hexdigest()[:10]
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self._extra = extra_sbatch_options(self.settings.extra_sbatch)
        self._scripts: Path | None = None
        self._submitted: dict[str, float] = {}  # id → when this distributor submitted it
        self._killed: set[str] = set()
        self._snapshot: dict[str, str] = {}  # id → state, from the last squeue
        self._poller = Poller(
            self.settings.poll_min, self.settings.poll_max, self.settings.max_queries_per_minute
        )
        self._left: set[str] = set()  # ids that left squeue, waiting for a final sacct record
        self._records: dict[str, accounting.AccountingRecord] = {}
        self._sacct_at = -math.inf
        # Status rounds (calls of get_submitted_or_running) seen, and the one of the last sacct.
        self._round = 0
        self._sacct_round = -1
        self._max_array_size: int | None = None
        self._listed: set[str] = set()  # active jobs, for member kills (_still_listed)
        self._listed_at = -math.inf

    # -- the protocol ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._scripts is None:
            self._scripts = Path(tempfile.mkdtemp(prefix="jobfleet-slurm-"))

    def stop(self) -> None:
        """Cancel what this distributor submitted that still runs; remove its script files."""
        live = [job for job in self._submitted if job not in self._killed]
        if live:
            try:
                running = self._squeue()
            except SlurmCommandError:
                running = {}
            doomed = [job for job in live if job in running]
            if doomed:
                self.terminate_task_instances(doomed)
        if self._scripts is not None:
            shutil.rmtree(self._scripts, ignore_errors=True)
            self._scripts = None
        self.packer.close()

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        options = self._resource_options(requested_resources)
        job_id = self._sbatch(command, options, array=False)
        self._submitted[job_id] = time.time()
        self._poller.hurry()
        return job_id

    def submit_array_to_batch_distributor(
        self,
        command: str,
        name: str,
        requested_resources: dict[str, Any],
        array_length: int,
    ) -> dict[int, str]:
        self.check_array_length(array_length)
        packed = self.submit_packed_array(
            command, requested_resources, array_length, self._submit_array
        )
        if packed is not None:
            return packed
        return self._submit_array(command, requested_resources, array_length)

    def _submit_array(
        self, command: str, requested_resources: Mapping[str, Any], array_length: int
    ) -> dict[int, str]:
        options = self._resource_options(requested_resources)
        chunk = self.max_array_size()
        steps: dict[int, str] = {}
        for offset in range(0, array_length, chunk):
            size = min(chunk, array_length - offset)
            throttle = f"%{self.settings.array_throttle}" if self.settings.array_throttle else ""
            array_options = [*options, f"--array=0-{size - 1}{throttle}"]
            job_id = self._sbatch(command, array_options, array=True, offset=offset)
            now = time.time()
            for index in range(size):
                steps[offset + index] = f"{job_id}_{index}"
                self._submitted[f"{job_id}_{index}"] = now
        self._poller.hurry()
        return steps

    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        """From one squeue for all of the run's jobs (reused while the interval runs); a
        packed member is there while its array element is."""
        return self.packed_submitted_or_running(distributor_ids, self._jobs_present)

    def _jobs_present(self, distributor_ids: list[str]) -> set[str]:
        self._round += 1
        if self._poller.due():
            self._refresh_snapshot()
        # Wall-clock time of the snapshot (0 before the first: only submitted jobs are new).
        wall = time.time() - min(self._poller.since_answer(), time.time())
        present = set()
        for job in distributor_ids:
            if job in self._killed:
                continue  # cancelled: never reported running again
            # Submitted after the snapshot was taken: too new to be missing from it.
            if job in self._snapshot or self._submitted.get(job, 0.0) > wall:
                present.add(job)
            elif job not in self._records or not self._records[job].finished:
                self._left.add(job)
        self._settle_left()
        return present

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        """One scancel for all of them (in chunks of 500 ids); a packed member through the
        channel, unless its whole element goes."""
        self.terminate_packed(distributor_ids, self._cancel, self._still_listed)

    def _still_listed(self, job: str) -> bool:
        """Whether Slurm lists the job as active, from a squeue at most once a second (while
        a member kill waits for its worker)."""
        now = time.monotonic()
        if now - self._listed_at >= 1.0:
            try:
                self._listed = set(self._list_jobs())
            except SlurmCommandError:
                return True  # cannot tell: wait for the worker, within the kill's bound
            self._listed_at = now
        return _listed(job, self._listed)

    def _cancel(self, distributor_ids: list[str]) -> None:
        ids = sorted({str(job) for job in distributor_ids if _is_job_id(str(job))})
        if not ids:
            return
        self._killed.update(ids)
        for start in range(0, len(ids), _SCANCEL_CHUNK):
            self.commands.run(["scancel", *ids[start : start + _SCANCEL_CHUNK]], check=False)
        self._poller.hurry()
        self._wait_gone(ids)

    def _wait_gone(self, ids: list[str]) -> None:
        """Return once Slurm lists none of the jobs as active (their processes are gone).

        Slurm kills asynchronously (CANCELLED, then COMPLETING while the node cleans up); the
        protocol promises that nothing of a killed instance runs once this call returns.
        """
        deadline = time.monotonic() + _KILL_WAIT
        wanted = set(ids)
        while time.monotonic() < deadline:
            try:
                active = set(self._list_jobs())
            except SlurmCommandError:
                return
            # An array task is listed as "123_4", a whole array's pending part as "123_[5-9]".
            if not any(_listed(job, active) for job in wanted):
                for job in wanted:
                    self._snapshot.pop(job, None)
                return
            time.sleep(_KILL_POLL)  # Slurm offers no way to wait for a cancel to finish

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        return {}

    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        """sacct's final record of the job; never raises (`finalized=False` while it lags)."""
        try:
            return self.packed_exit_info(distributor_id, self._exit_info)
        except Exception as exc:  # the protocol: never raise, say it is unknown
            return RemoteExitInfo.unknown(f"asking Slurm failed: {exc}", finalized=False)

    # -- submission -------------------------------------------------------------------------------

    def _resource_options(self, requested: Mapping[str, Any]) -> list[str]:
        request = ResourceRequest.parse(requested)
        options: list[str] = []
        if request.cores is not None:
            options.append(f"--cpus-per-task={max(1, math.ceil(request.cores))}")
        if request.memory is not None:
            options.append(f"--mem={max(1, math.ceil(request.memory / MIB))}M")
        if request.runtime is not None:
            options.append(f"--time={_slurm_time(request.runtime)}")
        if request.gpus:
            kind = f":{request.gpu_type}" if request.gpu_type else ""
            options.append(f"--gres=gpu{kind}:{request.gpus}")
        partition = request.queue if request.queue not in (None, DEFAULT_QUEUE) else None
        partition = partition or self.settings.partition
        if partition:
            options.append(f"--partition={_plain('partition', partition)}")
        extra = request.extra
        for key, flag, fallback in (
            ("account", "--account", self.settings.account),
            ("qos", "--qos", self.settings.qos),
            ("constraint", "--constraint", None),
        ):
            value = extra.get(key, fallback)
            if value:
                options.append(f"{flag}={_plain(key, str(value))}")
        return [*options, *self._extra]

    def _sbatch(self, command: str, options: Sequence[str], *, array: bool, offset: int = 0) -> str:
        token = uuid.uuid4().hex
        script = self._write_script(command, token, offset)
        logs = self._log_dir()
        pattern = "slurm-%A_%a.out" if array else "slurm-%j.out"
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={self.tag}",
            f"--comment={token}",
            f"--output={logs / pattern}",
            *options,
            str(script),
        ]
        try:
            if self.channel_token:
                # An http channel's token reaches the job through the environment sbatch
                # exports (its default, --export=ALL), never its command line or the script.
                env = {**os.environ, CHANNEL_TOKEN_VARIABLE: self.channel_token}
                output = self.commands.run(argv, env=env)
            else:
                output = self.commands.run(argv)
        except SlurmCommandError as error:
            # The job may exist although sbatch did not say so: never submit it twice.
            found = self._find_by_token(token)
            if found is None:
                raise BackendError(f"sbatch refused the job: {error}") from None
            return found
        job_id = output.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch answered {output.strip()!r}, not a job id")
        return job_id

    def _write_script(self, command: str, token: str, offset: int = 0) -> Path:
        if self._scripts is None:
            raise BackendError("The Slurm distributor is not started.")
        argv = self.wrapper_argv(command)
        path = self._scripts / f"{token}.sh"
        # The array chunk's offset goes in the script, not in sbatch --export: a variable
        # list there makes slurmd load the user's login environment before every job
        # (SLURM_GET_USER_ENV), which cost 150 ms of daemon CPU per job here.
        lines = ["#!/bin/sh"]
        if offset:
            lines.append(f"export {OFFSET_VARIABLE}={int(offset)}")
        # One line that replaces the shell with the wrapper; every word quoted.
        lines.append(f"exec {shlex.join(argv)}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def _log_dir(self) -> Path:
        if self.settings.log_dir:
            path = Path(self.settings.log_dir)
        elif self.host_url and self.host_url.startswith("file://"):
            path = Path(self.host_url.removeprefix("file://")).parent / "slurm"
        else:
            path = Path(tempfile.gettempdir()) / self.tag
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _find_by_token(self, token: str) -> str | None:
        try:
            entries = self._list_jobs(active_only=False)
        except SlurmCommandError:
            return None
        for job_id, (_state, comment) in entries.items():
            if comment == token:
                return job_id.split("_", 1)[0]
        return None

    def max_array_size(self) -> int:
        """How many tasks one array may have: Slurm's MaxArraySize (indices stay below it)."""
        if self._max_array_size is None:
            try:
                output = self.commands.run(["scontrol", "show", "config"])
                found = re.search(r"^MaxArraySize\s*=\s*(\d+)", output, re.MULTILINE)
                size = int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE
            except SlurmCommandError:
                size = DEFAULT_MAX_ARRAY_SIZE
            self._max_array_size = max(1, size)
        return self._max_array_size

    # -- status -----------------------------------------------------------------------------------

    def _squeue(self) -> dict[str, str]:
        """The status round's squeue (counted against the rate limit): active job → state."""
        self._poller.count()
        return {job: state for job, (state, _comment) in self._list_jobs().items()}

    def _list_jobs(self, *, active_only: bool = True) -> dict[str, tuple[str, str]]:
        """One squeue of this run's jobs (array tasks one per line): id → (state, comment)."""
        output = self.commands.run(
            ["squeue", "-h", "-r", "-u", self.user, "-n", self.tag, "-o", accounting.SQUEUE_FORMAT]
        )
        return {
            entry.job_id: (entry.state, entry.comment)
            for entry in accounting.parse_squeue(output)
            if entry.state in accounting.ACTIVE_STATES or not active_only
        }

    def _refresh_snapshot(self) -> None:
        try:
            snapshot = self._squeue()
        except SlurmCommandError:
            return  # keep the last answer; the next round asks again
        self._poller.answered(changed=snapshot != self._snapshot)
        self._snapshot = snapshot

    def _settle_left(self) -> None:
        """One sacct call for every job that left squeue and has no final record yet."""
        waiting = {job for job in self._left if not self._final(job)}
        self._left = waiting
        if not waiting or not self.settings.use_sacct:
            return
        # One sacct per round: triage asks about each job of a round, and one call answered all
        # of them (a round slower than poll_max may ask again).
        since = time.monotonic() - self._sacct_at
        asked_this_round = self._sacct_round == self._round and since < self.settings.poll_max
        if since < self.settings.poll_min or asked_this_round or not self._poller.allowed():
            return
        self._sacct_at, self._sacct_round = time.monotonic(), self._round
        self._records.update(self._sacct(waiting))

    def _final(self, job: str) -> bool:
        record = self._records.get(job)
        return record is not None and record.finished

    def _sacct(self, jobs: Iterable[str]) -> dict[str, accounting.AccountingRecord]:
        jobs = sorted(jobs)
        known = [self._submitted[job] for job in jobs if job in self._submitted]
        since = (min(known) if len(known) == len(jobs) else time.time() - _SACCT_WINDOW) - 60
        self._poller.count()
        output = self.commands.run(
            [
                "sacct",
                "--parsable2",
                "--noheader",
                f"--starttime={time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(since))}",
                f"--jobs={accounting.job_ids_argument(jobs)}",
                f"--format={accounting.SACCT_FORMAT}",
            ],
            check=False,
        )
        records = accounting.parse_sacct(output)
        # A recycled id (another job of another run) is not ours: only our tag counts.
        return {job: record for job, record in records.items() if record.name == self.tag}

    def _exit_info(self, job: str) -> RemoteExitInfo:
        if job in self._snapshot:
            return RemoteExitInfo.unknown(
                f"Slurm still lists it as {self._snapshot[job]}", finalized=False
            )
        if not self.settings.use_sacct:
            return RemoteExitInfo.unknown(
                "it left squeue and accounting (sacct) is switched off: its outcome is unknown"
            )
        if not self._final(job):
            self._left.add(job)
            self._settle_left()
        record = self._records.get(job)
        if record is None:
            return RemoteExitInfo.unknown(
                "it left squeue and sacct has no record of it yet (accounting lags)",
                finalized=False,
            )
        base = job.split("_", 1)[0]
        killed = job in self._killed or base in self._killed
        # Only a failed job's output can tell more (its whole exit status, its last words).
        output = self._output_tail(job) if record.state == "FAILED" else ""
        return accounting.exit_info(record, killed_by_us=killed, output=output)

    def _output_tail(self, job: str) -> str:
        """The end of the job's output file (the wrapper's stderr), or "" when it is not here."""
        path = self._log_dir() / f"slurm-{job}.out"  # the --output patterns of _sbatch
        try:
            with open(path, "rb") as output:
                output.seek(max(0, path.stat().st_size - _OUTPUT_TAIL))
                return output.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


def _listed(job: str, active: set[str]) -> bool:
    if job in active:
        return True
    base, _, task = job.partition("_")
    return (
        base in active or any(entry.startswith(f"{base}_[") for entry in active)
        if task
        else any(entry.startswith(f"{base}_") for entry in active)
    )


def _is_job_id(text: str) -> bool:
    return re.fullmatch(r"\d+(_\d+)?", text) is not None


def _plain(field: str, value: str) -> str:
    """A value passed to sbatch as one option: refuse control characters (log injection)."""
    if not value or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise BackendError(f"The Slurm {field} {value!r} is empty or holds control characters.")
    return value


def _slurm_time(seconds: int) -> str:
    """Slurm's D-HH:MM:SS, rounded up to whole minutes (Slurm's own granularity)."""
    minutes = max(1, math.ceil(seconds / 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00"
