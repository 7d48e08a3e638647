"""`JobfleetJobExecutor`: PSI/J's `jobfleet` executor, jobfleet's host embedded in the caller.

Each PSI/J job is a jobfleet run of one task (`create_run`), and its native id is the run's id
in the ledger. Every executor instance has one background thread, its host: it drives the
`DistributorService` of each run it submitted (one round each, in turn) and reads every job it
watches from the ledger, turning the ledger's states into PSI/J status changes.

A run outlives the executor object that submitted it: the ledger holds it, and the backend runs
it. `attach` watches a run from the ledger; when no live service owns it any more (its
submitter's process is gone, or its lease ran out) the attaching executor takes it over, as
`jobfleet run --resume` would. See docs/psij.md for why a host thread per executor rather than
a detached service per job.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version
from psij import (
    InvalidJobException,
    Job,
    JobExecutor,
    JobExecutorConfig,
    JobSpec,
    JobState,
    JobStatus,
    ResourceSpecV1,
    SubmitException,
)
from sqlalchemy import select

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host import kills
from jobfleet.core.host.ledger import (
    FINAL_RUN_STATUSES,
    Cluster,
    LeaseError,
    Ledger,
    Run,
    Task,
    TaskInstance,
    lease_is_live,
)
from jobfleet.core.host.runs import ServiceOptions, create_run
from jobfleet.core.host.service import DistributorService
from jobfleet.core.host.taskfile import TaskDefinition
from jobfleet.psij import mapping

logger = logging.getLogger(__name__)

DEFAULT_CLUSTER = "multiprocess"
CLUSTER_ENV = "JOBFLEET_PSIJ_CLUSTER"
"""Names the backend when neither the config nor the executor URL does."""
LEDGER_ENV = "JOBFLEET_LEDGER"


class JobfleetExecutorConfig(JobExecutorConfig):
    """How the `jobfleet` executor reaches jobfleet: the backend, its settings, the ledger.

    `cluster`: the backend's name (`multiprocess` when neither this, the executor's `url` nor
    $JOBFLEET_PSIJ_CLUSTER names one). `settings`: the backend's settings (its
    `JOBFLEET_<BACKEND>_*` environment variables apply too). `ledger`: a SQLite path or a
    database URL ($JOBFLEET_LEDGER, else `<work_directory>/jobfleet/ledger.db`): executors that
    share it can attach each other's jobs. `runs_directory`: where runs keep their channel and
    logs (beside a SQLite ledger by default; Slurm needs a shared file system). `work_directory`
    is PSI/J's own (launcher scripts). `max_attempts`: jobfleet's retries of a failed job (1:
    none, as PSI/J expects). `new_queues`: a `queue_name` that the ledger does not know yet is
    added without limits of its own (else the job is refused). `service_options`: jobfleet's
    `ServiceOptions` fields (poll and heartbeat intervals …).
    """

    def __init__(
        self,
        cluster: str | None = None,
        settings: Mapping[str, Any] | None = None,
        ledger: str | os.PathLike[str] | None = None,
        runs_directory: str | os.PathLike[str] | None = None,
        *,
        max_attempts: int = 1,
        new_queues: bool = True,
        service_options: Mapping[str, Any] | None = None,
        launcher_log_file: Path | None = None,
        work_directory: Path | None = None,
    ) -> None:
        super().__init__(launcher_log_file=launcher_log_file, work_directory=work_directory)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self.cluster = cluster
        self.settings = dict(settings or {})
        self.ledger = ledger
        self.runs_directory = Path(runs_directory) if runs_directory is not None else None
        self.max_attempts = max_attempts
        self.new_queues = new_queues
        self.service_options = dict(service_options or {})

    def ledger_url(self) -> str:
        if self.ledger is not None:
            return os.fspath(self.ledger)
        return os.environ.get(LEDGER_ENV) or str(self.work_directory / "jobfleet" / "ledger.db")


def _cluster_name(config: JobfleetExecutorConfig, url: str | None) -> str:
    if config.cluster:
        return config.cluster
    if url:
        # `url` names the backend: "slurm", or "jobfleet://slurm".
        return url.split("://", 1)[-1].strip("/") or DEFAULT_CLUSTER
    return os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER


_LEDGERS: dict[str, Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def _open_ledger(url: str) -> Ledger:
    """One open (and migrated) ledger per URL and process, shared by the executors."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(url)
        if ledger is None:
            if "://" not in url:
                Path(url).parent.mkdir(parents=True, exist_ok=True)
            ledger = _LEDGERS[url] = Ledger.open(url)
        return ledger


@dataclass
class _Watched:
    """A job this executor reports on; `service` when this executor drives its run."""

    job: Job
    run_id: int
    service: DistributorService | None = None
    failures: int = 0
    reported: JobState | None = field(default=None)


class JobfleetJobExecutor(JobExecutor):
    """Runs PSI/J jobs as jobfleet runs of one task, on any jobfleet backend."""

    _VERSION_ = Version("0.1.0")
    POLL_INTERVAL = 0.2
    """Seconds between two rounds of the host thread."""

    def __init__(self, url: str | None = None, config: JobExecutorConfig | None = None) -> None:
        if config is None:
            config = JobfleetExecutorConfig()
        elif not isinstance(config, JobfleetExecutorConfig):
            raise TypeError(
                "the jobfleet executor takes a JobfleetExecutorConfig "
                f"(jobfleet.psij.JobfleetExecutorConfig), not {type(config).__name__}"
            )
        super().__init__(url=url, config=config)
        self.jobfleet_config: JobfleetExecutorConfig = config
        self.cluster = _cluster_name(config, url)
        self.ledger = _open_ledger(config.ledger_url())
        self._lock = threading.RLock()
        self._watched: dict[str, _Watched] = {}  # by PSI/J job id
        self._wake = threading.Event()
        self._round_lock = threading.Lock()  # a round and `close` never overlap
        self._leaving = False
        self._thread: threading.Thread | None = None
        _EXECUTORS.add(self)

    # -- PSI/J's executor API -------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Create the job's run and take it over; the host thread submits it in its next round."""
        spec = self._check_job(job)
        try:
            task = self._task(job)
            options = ServiceOptions.from_dict(
                {"poll_interval": self.POLL_INTERVAL, **self.jobfleet_config.service_options}
            )
            run_id = create_run(
                self.ledger,
                [task],
                cluster=self.cluster,
                name=spec.name or f"psij-{job.id}",
                cluster_settings=self.jobfleet_config.settings,
                options=options,
                work_root=self.jobfleet_config.runs_directory,
                new_queues=self.jobfleet_config.new_queues,
            )
        except InvalidJobException:
            job.executor = None
            raise
        except (JobfleetError, ValueError, OSError) as exc:
            job.executor = None
            raise SubmitException(str(exc)) from exc
        service = DistributorService(self.ledger, run_id)
        try:
            service.start()
        except Exception as exc:
            job.executor = None
            raise SubmitException(f"jobfleet run {run_id} could not be started: {exc}") from exc
        job._native_id = str(run_id)
        self._publish(job, JobStatus(JobState.QUEUED, metadata={"run_id": run_id}))
        self._watch(_Watched(job, run_id, service, reported=JobState.QUEUED))

    def _task(self, job: Job) -> TaskDefinition:
        spec = job.spec
        assert spec is not None
        if not spec.executable:
            raise InvalidJobException("The job has no executable")
        resources = mapping.resources_of(spec, self.cluster)
        launcher = self._get_launcher(spec.launcher or "single")
        argv = launcher.get_launch_command(job)
        command, env = mapping.shell_command(
            argv,
            directory=str(spec.directory) if spec.directory is not None else None,
            env=mapping.environment_of(spec),
            inherit_environment=spec.inherit_environment,
            nodefile=str(self._nodefile(job)),
            process_count=_process_count(spec),
        )
        return TaskDefinition(
            name=f"psij-{job.id}",
            command=command,
            resources=resources,
            env=env,
            max_attempts=self.jobfleet_config.max_attempts,
        )

    def _nodefile(self, job: Job) -> Path:
        # PSI/J's work directory: where its launcher scripts are, reachable from the nodes.
        return self.config.work_directory / "jobfleet-nodefiles" / job.id

    def cancel(self, job: Job) -> None:
        """Ask for the job's run to be killed; it ends CANCELED (unless it ended first)."""
        watched = self._find(job)
        if watched is None:
            raise SubmitException(f"Job {job.id} was not submitted to or attached by this executor")
        try:
            if watched.service is not None:
                kills.request_run_kill(self.ledger, watched.run_id)  # our next round kills it
            else:
                kills.kill(self.ledger, str(watched.run_id), wait=False)
        except JobfleetError as exc:
            if "already over" not in str(exc):
                raise SubmitException(str(exc)) from exc
        self._wake.set()

    def list(self) -> list[str]:
        """The native ids (run ids) of the runs on this executor's backend that are not over."""
        with self.ledger.read_session() as session:
            ids = session.scalars(
                select(Run.id)
                .join(Cluster, Cluster.id == Run.cluster_id)
                .where(Cluster.name == self.cluster, Run.status.not_in(list(FINAL_RUN_STATUSES)))
                .order_by(Run.id)
            )
            return [str(run_id) for run_id in ids]

    def attach(self, job: Job, native_id: str) -> None:
        """Watch the run `native_id` (a run id of this executor's ledger) through `job`."""
        if job.status.state != JobState.NEW:
            raise InvalidJobException("Job must be in the NEW state")
        try:
            run_id = int(native_id)
        except ValueError:
            raise InvalidJobException(f"{native_id!r} is not a jobfleet run id") from None
        with self.ledger.read_session() as session:
            if session.get(Run, run_id) is None:
                raise InvalidJobException(f"The ledger {self.ledger.safe_url} has no run {run_id}")
        job.executor = self
        job._native_id = native_id
        self._watch(_Watched(job, run_id))

    # -- the host thread ------------------------------------------------------------------------

    def _watch(self, watched: _Watched) -> None:
        with self._lock:
            self._watched[watched.job.id] = watched
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._host, name=f"jobfleet-psij-{id(self):x}", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _find(self, job: Job) -> _Watched | None:
        with self._lock:
            return self._watched.get(job.id)

    def _host(self) -> None:
        while True:
            with self._lock:
                watched = list(self._watched.values())
                if not watched or self._leaving:
                    self._thread = None
                    return
            with self._round_lock:
                for item in watched:
                    self._drive(item)
            self._wake.wait(self.POLL_INTERVAL)
            self._wake.clear()

    def _drive(self, item: _Watched) -> None:
        try:
            if item.service is not None:
                item.service.round()
            observed = self._observe(item)
            if item.service is None and observed.run_status not in FINAL_RUN_STATUSES:
                self._take_over_if_orphaned(item)
            self._report(item, observed)
            item.failures = 0
        except Exception as exc:
            item.failures += 1
            logger.warning("jobfleet run %s: %s", item.run_id, exc, exc_info=True)
            if item.failures >= 10:
                self._finish(item, JobStatus(JobState.FAILED, message=f"jobfleet host: {exc}"))

    def _observe(self, item: _Watched) -> mapping.Observed:
        with self.ledger.read_session() as session:
            run = session.get_one(Run, item.run_id)
            task = session.scalars(select(Task).where(Task.run_id == item.run_id)).first()
            instance = session.scalars(
                select(TaskInstance)
                .where(TaskInstance.run_id == item.run_id)
                .order_by(TaskInstance.attempt.desc())
            ).first()
            return mapping.Observed(
                run_status=run.status,
                task_state=task.state if task is not None else "pending",
                instance_state=instance.state if instance is not None else None,
                exit_record=instance.exit_record if instance is not None else None,
                started=instance is not None and instance.started_at is not None,
            )

    def _take_over_if_orphaned(self, item: _Watched) -> None:
        """Drive an attached run whose owner is gone, as `jobfleet run --resume` would."""
        with self.ledger.read_session() as session:
            if lease_is_live(session.get_one(Run, item.run_id)):
                return
        service = DistributorService(self.ledger, item.run_id)
        try:
            service.start()
        except LeaseError:
            return  # another host took it meanwhile
        item.service = service

    def _report(self, item: _Watched, observed: mapping.Observed) -> None:
        state = mapping.psij_state(observed)
        if state == item.reported:
            return
        status = JobStatus(state, metadata={"run_id": item.run_id})
        if state.final:
            status = JobStatus(
                state,
                exit_code=mapping.exit_code_of(observed.exit_record),
                message=None if state == JobState.COMPLETED else mapping.message_of(observed),
                metadata={"run_id": item.run_id},
            )
            self._finish(item, status)
            return
        item.reported = state
        self._publish(item.job, status)

    def _finish(self, item: _Watched, status: JobStatus) -> None:
        item.reported = status.state
        with self._lock:
            self._watched.pop(item.job.id, None)
        if item.service is not None:
            try:
                item.service.close()
            except Exception as exc:
                logger.warning("jobfleet run %s: closing its service: %s", item.run_id, exc)
            item.service = None
        self._nodefile(item.job).unlink(missing_ok=True)
        self._publish(item.job, status)

    def _publish(self, job: Job, status: JobStatus) -> None:
        self._set_job_status(job, status)
        self._notify_callback(job, status)

    def leave(self) -> None:
        """Stop the host thread between two rounds and leave the runs as they are, owned by a
        process about to end: their jobs go on (a local backend's wrappers run in sessions of
        their own), and an executor that attaches to them takes them over. Called at exit."""
        with self._round_lock:
            self._leaving = True

    def close(self) -> None:
        """Stop driving the runs this executor drives, cleanly: the service of each stops its
        backend connection and gives the run up. A local backend (multiprocess, sequential)
        stops its running jobs then, as `jobfleet run` does on a clean stop; a batch backend's
        jobs go on, and `attach` resumes them."""
        with self._round_lock, self._lock:
            watched = list(self._watched.values())
            self._watched.clear()
        for item in watched:
            if item.service is not None:
                try:
                    item.service.close()
                except Exception as exc:
                    logger.warning("jobfleet run %s: closing its service: %s", item.run_id, exc)
                item.service = None


def _process_count(spec: JobSpec) -> int:
    resources = spec.resources
    return resources.computed_process_count if isinstance(resources, ResourceSpecV1) else 1


_EXECUTORS: weakref.WeakSet[JobfleetJobExecutor] = weakref.WeakSet()


@atexit.register
def _leave_all() -> None:
    """At exit, no round is cut off halfway; the runs stay for a later `attach`."""
    for executor in list(_EXECUTORS):
        executor.leave()
