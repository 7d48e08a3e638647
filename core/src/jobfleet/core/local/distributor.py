"""The local distributor: each task instance is a `jobfleet-worker-node` process on this machine.

The shared base of the multiprocess backend (a pool of cores, memory and GPUs) and the
sequential one (a single slot).

Scheduling: instances wait in submission order and start as soon as their cores, memory and
GPUs are free; an instance that does not fit never blocks later ones that do (no head-of-line
blocking), but once the oldest waiting instance has been overtaken `overtake_limit` times,
nothing else starts until it has (bounded starvation).

Killing is synchronous: `terminate_task_instances` returns once the killed wrappers and every
process they started are gone, and a killed instance that was still queued never starts.

After a host restart: wrappers run in sessions of their own, so those started by the
distributor of a host that crashed keep running (re-parented to init) and keep reporting to the
channel. A new distributor (new id prefix) asked about such ids finds their processes by the
`JOBFLEET_DISTRIBUTOR_ID` tag they carry (one scan of /proc per call) and answers for them:
running while a tagged process lives, killable (SIGTERM to the wrapper, SIGKILL after the
grace period). It "adopts" them in that sense only: their resources are not in its pool.

Slot workers (`slot_workers`, on by default): instead of one wrapper process per instance, a
set of long-lived `jobfleet-worker-node slot` processes (`slots.py`) each run instance after
instance, sent over their stdin; each still runs its instance with every guarantee of a one-shot
wrapper (the same `TaskRunner`), and says `done` on its stdout once the final report is durable.
Workers start lazily, up to the number of instances running at once; idle ones are kept for the
next instance (at most one per core of the pool). Killing a running instance asks its worker
(which stops that task's process group and reports K) and waits for its `done`; a worker that
does not answer in time, or dies, is SIGKILLed with its tree and replaced, and its instance ends
as a wrapper killed by that signal would (its exit info says so). Each task carries the tag, so
a restarted host's distributor finds it; its SIGTERM then goes to the slot worker above it.

Its work directory (the wrappers' own logs) is a `jobfleet-local-*` directory of the temp dir,
locked as its own while it lives (`jobfleet.core.owned_dirs`): a distributor starting removes
those of distributors that died without stopping (a host killed with SIGKILL), never a live one.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from jobfleet.core import process_tree
from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.local.ended import Ended, EndedRecords
from jobfleet.core.local.pool import Need, ResourcePool, machine_cores, machine_memory
from jobfleet.core.local.settings import LocalSettings, gpu_ids
from jobfleet.core.local.slots import (
    SlotWorker,
    fork_server_tools_missing,
    is_slot_worker,
    wait_gone,
    warn_slots_off,
    worker_environment,
    workers_above,
    workers_running,
)
from jobfleet.core.owned_dirs import OwnedDirectory, make_owned_directory, remove_abandoned
from jobfleet.core.private import open_private
from jobfleet.core.resources import ResourceRequest, parse_cores, parse_memory
from jobfleet.core.wrapper import (
    CHANNEL_TOKEN_VARIABLE,
    ENTRY_POINT_VARIABLE,
    WRAPPER_FAILED,
    entry_point_argv,
    exit_info_from_wrapper,
    without_host_variables,
)

_QUEUED, _RUNNING, _FINISHED, _KILLED = "queued", "running", "finished", "killed"

_TAG = "JOBFLEET_DISTRIBUTOR_ID"
"""The environment variable that tags a wrapper and everything it starts with its id."""

_ID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9]+", re.ASCII)
"""The ids every instance hands out: its own random prefix, a dash, a counter."""

_WORKDIR_PREFIX = "jobfleet-local-"

_POLL = 0.02
"""Seconds between two looks at /proc while waiting for processes that are not our children."""


@dataclass(eq=False, slots=True)
class _Job:
    distributor_id: str
    argv: list[str]
    need: Need
    step: int | None
    state: str = _QUEUED
    process: subprocess.Popen[bytes] | None = None
    worker: SlotWorker | None = None
    in_slot: bool = False
    log: Path | None = None
    gpus: tuple[str, ...] = ()
    returncode: int | None = None
    oom_kills_at_start: int | None = None
    overtaken: int = 0
    ended: bool = False
    """Set (under the lock, with the distributor's `_ended` notified) once it is over: a flag,
    not an Event each: an Event costs ~1 KiB, and every instance is remembered."""


class LocalDistributor(BaseClusterDistributor):
    """Runs wrappers as local processes, as many at once as the resource pool allows.

    A backend subclass sets `cluster_type`, its `settings_class`, and either uses
    `LocalSettings` as its settings or maps its own onto them in `local_settings()`;
    `max_parallel` caps how many wrappers run at once whatever the pool says.
    """

    settings_class: ClassVar[type[Any] | None] = LocalSettings
    max_parallel: ClassVar[int | None] = None

    def __init__(self, cluster_name: str, *args: Any, **connection_parameters: Any) -> None:
        super().__init__(cluster_name, *args, **connection_parameters)
        self.local = self.local_settings()
        self.pool = _pool_from(self.local)
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._jobs: dict[str, _Job] = {}  # queued and running instances
        self._ended_jobs = EndedRecords()  # every ended one, packed: the host's memory stays flat
        self._waiting: deque[_Job] = deque()
        self._running = 0
        self._lock = threading.RLock()
        self._ended = threading.Condition(self._lock)  # notified whenever an instance ends
        self._workdir: Path | None = None
        self._workdir_owned: OwnedDirectory | None = None
        self._stopped = False
        # Why slot workers cannot run here ("" when they can); None until first asked.
        self._slots_unavailable: str | None = None
        # Ids of an earlier distributor (a host that was restarted) whose processes this one
        # has seen running (_RUNNING) or has killed (_KILLED).
        self._adopted: dict[str, str] = {}
        self._workers: set[SlotWorker] = set()  # every live slot worker
        self._idle: list[SlotWorker] = []  # those without an instance
        self._worker_count = itertools.count(1)

    def local_settings(self) -> LocalSettings:
        """The settings this distributor runs on; a backend with settings of its own maps them."""
        if not isinstance(self.settings, LocalSettings):
            raise TypeError(
                f"{type(self).__name__} got settings of type {type(self.settings).__name__}; "
                "override local_settings() to map them onto LocalSettings"
            )
        return self.settings

    def wrapper_options(self) -> list[str]:
        return ["--kill-grace", str(self.local.kill_grace), "--cgroup", self.local.cgroup]

    # -- the protocol -------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._workdir is None:
                # Those of hosts that crashed: their lock died with them.
                remove_abandoned(f"{_WORKDIR_PREFIX}*")
                self._workdir_owned = make_owned_directory(_WORKDIR_PREFIX)
                self._workdir = self._workdir_owned.path
            self._stopped = False

    def stop(self) -> None:
        """Drop the queue, stop every running wrapper (adopted ones too), remove the work
        directory."""
        with self._lock:
            self._stopped = True
            ids = [
                job.distributor_id
                for job in self._jobs.values()
                if job.state in (_QUEUED, _RUNNING)
            ]
            ids.extend(
                distributor_id
                for distributor_id, state in self._adopted.items()
                if state == _RUNNING
            )
        self.terminate_task_instances(ids)
        self._stop_workers()
        with self._lock:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            if self._workdir_owned is not None:
                self._workdir_owned.release()
                self._workdir_owned = None

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        need = self._need(requested_resources)
        in_slot = self._slots_on()
        argv = self._argv(command, in_slot)
        with self._lock:
            job = self._enqueue(argv, need, step=None)
            job.in_slot = in_slot
            self._schedule()
            return job.distributor_id

    def submit_array_to_batch_distributor(
        self,
        command: str,
        name: str,
        requested_resources: dict[str, Any],
        array_length: int,
    ) -> dict[int, str]:
        self.check_array_length(array_length)
        need = self._need(requested_resources)
        in_slot = self._slots_on()
        argv = self._argv(command, in_slot)
        with self._lock:
            jobs = [self._enqueue(argv, need, step) for step in range(array_length)]
            for job in jobs:
                job.in_slot = in_slot
            steps = {job.step: job.distributor_id for job in jobs if job.step is not None}
            self._schedule()
            return steps

    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        """The ids queued or running here, and those of an earlier distributor (a host that
        was restarted) that still have a live process; one scan of /proc for all of them."""
        with self._lock:
            found = {
                distributor_id
                for distributor_id in distributor_ids
                if (job := self._jobs.get(distributor_id)) and job.state in (_QUEUED, _RUNNING)
            }
            foreign = [
                distributor_id
                for distributor_id in self._foreign(distributor_ids)
                if self._adopted.get(distributor_id) != _KILLED  # killed: not running, as here
            ]
        if foreign:
            found.update(self._adopt(foreign))
        return found

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        """Drop queued instances and stop running ones; returns when they are all gone.

        Ids of an earlier distributor are stopped the same way, through their processes: the
        wrapper gets SIGTERM (it stops its task and reports K), and whatever still carries the
        id after the grace period gets SIGKILL.
        """
        running: list[_Job] = []
        with self._lock:
            foreign = self._foreign(distributor_ids)
            for distributor_id in distributor_ids:
                job = self._jobs.get(distributor_id)
                if job is None or job.state in (_FINISHED, _KILLED):
                    continue
                if job.state == _QUEUED:
                    job.state = _KILLED  # dropped from the queue by the next _schedule
                    self._mark_ended(job)
                else:
                    job.state = _KILLED
                    running.append(job)
        adopted = self._adopt(foreign) if foreign else {}
        workers: list[int] = []
        if adopted:
            with self._lock:
                self._adopted.update(dict.fromkeys(adopted, _KILLED))
            pids = [pid for tagged in adopted.values() for pid in tagged]
            # SIGTERM to the topmost processes only: the wrappers, where they live, which stop
            # their tasks' trees themselves and report K; the task's own processes where the
            # wrapper is gone.
            # A task of a slot worker: SIGTERM to the worker, which stops it and reports K.
            topmost = process_tree.topmost(pids)
            chosen = workers_above(topmost)
            workers = [pid for pid in chosen if is_slot_worker(pid)]
            process_tree.kill_pids(chosen, signal.SIGTERM)
        deadline = time.monotonic() + self.local.kill_grace + 1.0
        self._stop_wrappers([job for job in running if job.worker is None])
        self._stop_in_workers([job for job in running if job.worker is not None])
        if adopted:
            _wait_for_tagged(list(adopted), deadline)
            # A slot worker carries no tag: it reports K once its task is gone, then leaves.
            wait_gone(workers, deadline)
        with self._lock:
            self._schedule()

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        # A request that can never fit is refused at submission, so nothing is stuck.
        return {}

    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        with self._lock:
            job = self._jobs.get(distributor_id)
            foreign = job is None and bool(self._foreign([distributor_id]))
        if foreign:
            return self._exit_info_of_foreign(distributor_id)
        if job is None:
            with self._lock:
                ended = self._ended_record(distributor_id)
            if ended is None:
                return RemoteExitInfo.unknown(f"this distributor never ran {distributor_id!r}")
            if ended.killed:
                return _killed()
            return self._exit_info_of_finished(distributor_id, ended)
        with self._lock:
            state = job.state
        if state == _KILLED:
            return _killed()
        # Not ended yet: had it ended meanwhile, it would be gone from _jobs (asked again, it
        # answers from its record).
        if state in (_QUEUED, _RUNNING) or not job.ended:
            return RemoteExitInfo.unknown(f"still {state}", finalized=False)
        return self.get_remote_exit_info(distributor_id)

    def _ended_record(self, distributor_id: str) -> Ended | None:
        """What is remembered of an ended instance of ours (None: not ours, or not ended)."""
        prefix, _, number = distributor_id.partition("-")
        if prefix != self._prefix or not number.isdigit():
            return None
        return self._ended_jobs.get(int(number))

    # -- ids of an earlier distributor (after a host restart) -------------------------------

    def _foreign(self, distributor_ids: list[str]) -> list[str]:
        """The ids (once each) this instance does not know that another instance could have
        handed out: the right shape, another prefix. Unknown ids of its own prefix never
        existed, and other strings are no ids at all: neither is worth a look at /proc."""
        return [
            distributor_id
            for distributor_id in dict.fromkeys(distributor_ids)
            if isinstance(distributor_id, str)
            and distributor_id not in self._jobs
            and _ID_SHAPE.fullmatch(distributor_id)
            and not distributor_id.startswith(f"{self._prefix}-")
        ]

    def _adopt(self, distributor_ids: list[str]) -> dict[str, list[int]]:
        """The live processes of each id, in one scan; those found are remembered as adopted.

        Called without the lock held: a scan of /proc takes milliseconds. Adopted processes
        use cores, memory and GPUs this instance's pool knows nothing about: their needs are
        not known here (they were in the crashed host's requests), so the pool is not charged
        for them, and the machine may be busier than the pool thinks until they end.
        """
        live = process_tree.pids_by_tag(_TAG, distributor_ids)
        missing = [
            distributor_id for distributor_id in distributor_ids if distributor_id not in live
        ]
        if missing:
            # A slot worker whose task has ended but whose final report is still on its way
            # (an http channel retries while no host serves it): the instance still runs.
            live.update(workers_running(missing))
        if live:
            with self._lock:
                for distributor_id in live:
                    self._adopted.setdefault(distributor_id, _RUNNING)
        return live

    def _exit_info_of_foreign(self, distributor_id: str) -> RemoteExitInfo:
        with self._lock:
            killed = self._adopted.get(distributor_id) == _KILLED
        if killed:
            return _killed()
        if self._adopt([distributor_id]):
            return RemoteExitInfo.unknown(
                "started by an earlier distributor (a host that was restarted); still running",
                finalized=False,
            )
        with self._lock:
            seen = distributor_id in self._adopted
        how = (
            "it was started by an earlier distributor and ended after this one found it running"
            if seen
            else "if an earlier distributor started it, it ended before this one looked"
        )
        return RemoteExitInfo.unknown(
            f"not started by this distributor, and no process of it is left: {how}; its "
            "wrapper's final report, if it sent one, is in the channel"
        )

    # -- submission ---------------------------------------------------------------------------

    def _need(self, requested: dict[str, Any]) -> Need:
        request = ResourceRequest.parse(requested)
        need = Need(
            cores=request.cores if request.cores is not None else 1.0,
            memory=request.memory or 0,
            gpus=request.gpus or 0,
        )
        self.pool.check_fits_at_all(need)
        return need

    def _enqueue(self, argv: list[str], need: Need, step: int | None) -> _Job:
        if self._stopped or self._workdir is None:
            raise BackendError(f"The {self.cluster_type} distributor is not started.")
        job = _Job(f"{self._prefix}-{next(self._counter)}", argv, need, step)
        self._jobs[job.distributor_id] = job
        self._waiting.append(job)
        return job

    # -- scheduling (always under the lock) ---------------------------------------------------

    def _schedule(self) -> None:
        """Start every waiting instance that fits, oldest first, never starving the oldest.

        One pass over the queue, which stops where nothing more can start (so an instance
        ending while thousands wait costs what it starts, not a walk over all of them); killed
        instances are dropped from it as the pass meets them (lazily), so a kill of many queued
        instances costs no more than one pass.
        """
        if self._stopped:
            return
        waiting = self._waiting
        skipped: list[_Job] = []  # waiting instances that do not fit now, in order
        blocked: _Job | None = None
        while waiting:
            job = waiting[0]
            if job.state != _QUEUED:
                waiting.popleft()
                continue
            if self._cannot_start_more(blocked):
                break
            waiting.popleft()
            if self.pool.fits(job.need):
                self._launch(job)
                if blocked is not None:
                    blocked.overtaken += 1
            else:
                blocked = blocked or job
                skipped.append(job)
        waiting.extendleft(reversed(skipped))

    def _cannot_start_more(self, blocked: _Job | None) -> bool:
        if self.max_parallel is not None and self._running >= self.max_parallel:
            return True
        if not self.pool.has_free_cores():
            return True
        # The oldest waiting instance gets the next free resources once overtaken enough.
        return blocked is not None and blocked.overtaken >= self.local.overtake_limit

    def _launch(self, job: _Job) -> None:
        job.gpus = self.pool.take(job.need)
        job.oom_kills_at_start = kernel_oom_kills()
        job.state = _RUNNING
        self._running += 1
        assert self._workdir is not None
        if job.in_slot:
            self._launch_in_worker(job)
            return
        log = job.log = self._workdir / f"{job.distributor_id}.wrapper.log"
        try:
            with open(open_private(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as stderr:
                job.process = subprocess.Popen(
                    job.argv,
                    env=self._environment(job),
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
        except OSError as exc:
            log.write_text(f"the worker-node wrapper could not be started: {exc}\n")
            self._finished(job, returncode=WRAPPER_FAILED)
            return
        threading.Thread(
            target=self._watch, args=(job,), name=f"jobfleet-{job.distributor_id}", daemon=True
        ).start()

    def _environment(self, job: _Job) -> dict[str, str]:
        # The host's own variables (the ledger's URL and password) stay with the host: a
        # wrapper's environment is what its task inherits.
        env = without_host_variables(os.environ)
        env[_TAG] = job.distributor_id
        env["JOBFLEET_ARRAY_STEP_ID"] = "" if job.step is None else str(job.step)
        if self.channel_token:
            # An http channel's token: in the environment, never in argv (`ps` shows argv to
            # every user); the wrapper reads it and keeps it from its task.
            env[CHANNEL_TOKEN_VARIABLE] = self.channel_token
        if self.pool.total.gpus:
            # Every task sees exactly the devices it was given, and none when it asked for none.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.gpus)
        return env

    def _watch(self, job: _Job) -> None:
        assert job.process is not None
        returncode = job.process.wait()
        if returncode < 0:
            # The wrapper was killed before it could end its task: end what it left behind.
            _kill_leftovers(job)
        with self._lock:
            self._finished(job, returncode)
            self._schedule()

    def _finished(self, job: _Job, returncode: int) -> None:
        job.returncode = returncode
        self._running -= 1
        if job.state != _KILLED:
            job.state = _FINISHED
        self.pool.give_back(job.need, job.gpus)
        self._mark_ended(job)

    def _mark_ended(self, job: _Job) -> None:
        """Mark it over, and keep of it only its packed record (see `ended.py`)."""
        job.ended = True
        own_log = self._own_log(job.distributor_id)
        self._ended_jobs.add(
            int(job.distributor_id.rpartition("-")[2]),
            killed=job.state == _KILLED,
            returncode=job.returncode,
            oom_kills_at_start=job.oom_kills_at_start,
            log=None if job.log is None or job.log == own_log else job.log,
        )
        self._jobs.pop(job.distributor_id, None)
        self._ended.notify_all()

    def _own_log(self, distributor_id: str) -> Path | None:
        """The log of a wrapper named after its id (None without a work directory)."""
        if self._workdir is None:
            return None
        return self._workdir / f"{distributor_id}.wrapper.log"

    def _wait_ended(self, job: _Job, timeout: float) -> bool:
        """Whether `job` ended within `timeout` seconds. Not under the lock."""
        with self._ended:
            return self._ended.wait_for(lambda: job.ended, timeout)

    # -- slot workers (under the lock unless said otherwise) ----------------------------------

    def _slots_on(self) -> bool:
        """Slot workers where asked for, and only with this installation's own wrapper: one
        named by `$JOBFLEET_WORKER_NODE` (another installation, a stand-in) may have no slot
        mode, and is started once per instance as before."""
        if not self.local.slot_workers or os.environ.get(ENTRY_POINT_VARIABLE, "").strip():
            return False
        if self._slots_unavailable is None:
            self._slots_unavailable = fork_server_tools_missing() or ""
            if self._slots_unavailable:
                warn_slots_off(self._slots_unavailable)
        return not self._slots_unavailable

    def _argv(self, command: str, in_slot: bool) -> list[str]:
        """The one-shot wrapper's argv, or (slot workers) the worker-node arguments alone."""
        if in_slot:
            self.require_host_url()
            return shlex.split(command)  # built by the host from integers; never to a shell
        return self.wrapper_argv(command)

    def _launch_in_worker(self, job: _Job) -> None:
        try:
            worker = self._idle.pop() if self._idle else self._start_worker()
        except OSError as exc:
            assert self._workdir is not None
            job.log = self._workdir / f"{job.distributor_id}.wrapper.log"
            job.log.write_text(f"the slot worker could not be started: {exc}\n")
            self._finished(job, returncode=WRAPPER_FAILED)
            return
        worker.job, job.worker, job.log = job, worker, worker.log
        request = {
            "op": "run",
            "id": job.distributor_id,
            "step": job.step,
            "gpus": ",".join(job.gpus) if self.pool.total.gpus else None,
            "args": job.argv,
        }
        # A worker that died meanwhile fails the write; its reader ends the instance.
        worker.send(request)

    def _start_worker(self) -> SlotWorker:
        assert self._workdir is not None
        env = without_host_variables(os.environ)
        for variable in (_TAG, "JOBFLEET_ARRAY_STEP_ID"):  # the worker sets them per task
            env.pop(variable, None)
        if self.channel_token:
            env[CHANNEL_TOKEN_VARIABLE] = self.channel_token  # never in argv
        argv = [
            *entry_point_argv(),
            "slot",
            "--cluster",
            self.cluster_type,
            "--host-url",
            self.require_host_url(),
            *self.wrapper_options(),
        ]
        log = self._workdir / f"slot-{next(self._worker_count)}.worker.log"
        os.close(open_private(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        worker = SlotWorker(
            argv,
            worker_environment(env, self._prefix, str(self._workdir)),
            log,
            self._on_done,
            self._on_exit,
            lock_fd=self._workdir_owned.lock_fd if self._workdir_owned is not None else None,
        )
        self._workers.add(worker)
        return worker

    def _on_done(self, worker: SlotWorker, distributor_id: str, returncode: int) -> None:
        """A worker's `done` line (its reader thread): the instance ended and reported."""
        with self._lock:
            job = worker.job
            if job is None or job.distributor_id != distributor_id:
                return
            worker.job, job.worker = None, None
            if self._stopped or len(self._idle) >= max(1, int(self.pool.total.cores)):
                worker.close()
            else:
                self._idle.append(worker)
            self._finished(job, returncode)
            self._schedule()

    def _on_exit(self, worker: SlotWorker, returncode: int) -> None:
        """A worker ended (its reader thread): an instance it still ran ends with it."""
        with self._lock:
            self._workers.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            job = worker.job
            worker.job = None
        if job is None:
            return
        # What the task left behind: the worker (its subreaper) is gone.
        _kill_leftovers(job)
        with self._lock:
            job.worker = None
            # Killed by a signal: as a one-shot wrapper killed so; else it left without `done`.
            self._finished(job, returncode if returncode < 0 else WRAPPER_FAILED)
            self._schedule()

    def _stop_wrappers(self, jobs: list[_Job]) -> None:
        """SIGTERM each wrapper (it stops its task and reports), then SIGKILL what is left.
        Not under the lock."""
        for job in jobs:
            if job.process is not None:
                process_tree.kill_pids([job.process.pid], signal.SIGTERM)
        deadline = time.monotonic() + self.local.kill_grace + 1.0
        for job in jobs:
            if job.process is None:
                continue
            if not self._wait_ended(job, max(0.0, deadline - time.monotonic())):
                # The wrapper did not finish in time: kill it and everything below it.
                process_tree.kill_pids(
                    [*process_tree.descendant_pids(job.process.pid), job.process.pid]
                )
                self._wait_ended(job, 5.0)

    def _stop_in_workers(self, jobs: list[_Job]) -> None:
        """Ask each job's worker to stop it; a worker that does not answer within the grace
        period (+1 s) is SIGKILLed with its tree, which ends the job too. Not under the lock."""
        for job in jobs:
            worker = job.worker
            if worker is not None:
                worker.send({"op": "kill", "id": job.distributor_id})
        deadline = time.monotonic() + self.local.kill_grace + 1.0
        for job in jobs:
            if not self._wait_ended(job, max(0.0, deadline - time.monotonic())):
                worker = job.worker
                if worker is not None:
                    worker.kill()
                self._wait_ended(job, 10.0)

    def _stop_workers(self) -> None:
        """End every worker (they are idle by now): end-of-file, then SIGKILL if need be."""
        with self._lock:
            workers = list(self._workers)
            self._idle.clear()
        for worker in workers:
            worker.close()
        deadline = time.monotonic() + 5.0
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                worker.kill()
                worker.join(5.0)

    # -- triage -------------------------------------------------------------------------------

    def _exit_info_of_finished(self, distributor_id: str, ended: Ended) -> RemoteExitInfo:
        """What the wrapper's exit says, for when its final report never reached the host."""
        returncode = ended.returncode
        return exit_info_from_wrapper(
            returncode,
            oom_evidence=_oom_evidence(ended.oom_kills_at_start),
            raw_state=None if returncode is None else f"returncode {returncode}",
            detail=self._wrapper_log_tail(ended.log or self._own_log(distributor_id)),
        )

    def _wrapper_log_tail(self, log: Path | None) -> str:
        if self._workdir is None or log is None:
            return "its log is gone"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return "it left no log"
        return f"its last words: {text[-2000:].strip()!r}" if text.strip() else "it printed nothing"


def _kill_leftovers(job: _Job) -> None:
    """Kill every process still tagged with the job's distributor id, until none is left.

    A task runs in a session of its own, so a wrapper killed by a signal leaves it behind,
    re-parented to init; the tag in its environment (which the wrapper passes on) finds it.
    """
    _kill_tagged([job.distributor_id])


def _kill_tagged(distributor_ids: list[str]) -> None:
    """SIGKILL every process tagged with one of the ids, until none is left (or 5 s)."""
    deadline = time.monotonic() + 5.0
    while found := process_tree.pids_by_tag(_TAG, distributor_ids):
        process_tree.kill_pids([pid for pids in found.values() for pid in pids])
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)  # killed processes take a moment to leave /proc


def _wait_for_tagged(distributor_ids: list[str], deadline: float) -> None:
    """Wait until no process carries one of the ids; at `deadline`, SIGKILL what is left.

    They are not our children (their parent, a crashed host, is gone), so there is nothing to
    wait on: /proc is looked at again every few milliseconds.
    """
    while process_tree.pids_by_tag(_TAG, distributor_ids):
        if time.monotonic() >= deadline:
            _kill_tagged(distributor_ids)
            return
        time.sleep(_POLL)


def _killed() -> RemoteExitInfo:
    record = ExitRecord(ExitReason.CANCELLED, raw_state="killed", message="killed on request")
    return RemoteExitInfo(ErrorState.KILL_SELF, record.message, record=record)


def _oom_evidence(oom_kills_at_start: int | None) -> str | None:
    """The kernel's OOM kills while the job ran, where the kernel counts them (Linux 4.13+).

    Every OOM kill counts, a memory cgroup's included; on a machine shared with other work the
    count may include kills of other processes, but it is only consulted for a wrapper whose
    report is missing and whose task, or itself, died of SIGKILL.
    """
    now = kernel_oom_kills()
    if oom_kills_at_start is None or now is None or now <= oom_kills_at_start:
        return None
    return f"the kernel counted {now - oom_kills_at_start} OOM kill(s) while it ran"


def kernel_oom_kills() -> int | None:
    """The `oom_kill` count of /proc/vmstat; None where the kernel does not give it."""
    try:
        with open("/proc/vmstat", "rb") as vmstat:
            for line in vmstat:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _pool_from(settings: LocalSettings) -> ResourcePool:
    cores = parse_cores(settings.cores) if settings.cores is not None else machine_cores()
    memory = parse_memory(settings.memory) if settings.memory is not None else machine_memory()
    if settings.gpus is not None:
        devices = gpu_ids(settings.gpus)
    else:
        devices = gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    return ResourcePool(cores, memory, devices)
