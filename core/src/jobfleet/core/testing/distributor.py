"""Conformance: the distributor contracts of DESIGN §3.

The first tests need only the protocol. The rest run real commands through the real
`jobfleet-worker-node` wrapper, with the kit's own minimal host (`KitHost`, a file channel in
the test's temporary directory) reading the wrappers' reports, so every backend is held to the
same observable behaviour: what runs, how much at once, what a kill or a limit leaves behind,
and what is reported.

A K (killed) final report is an acknowledgement of a kill, not a terminal report in Toil's
sense: the contract is that a killed instance is never reported done and never runs after
`terminate_task_instances` returns.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from jobfleet.core.channel import FinalReport, RunningReport
from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.exit_info import ErrorState, ExitReason, RemoteExitInfo
from jobfleet.core.testing.capabilities import Capabilities
from jobfleet.core.testing.host import DEFAULT_TIMEOUT, KitHost, Submitted, is_locked, wait_for

# Ids no backend hands out: odd shapes must be answered, not crash the backend (or reach a shell).
UNKNOWN_IDS = ("jobfleet-no-such-id", "", "../../etc/passwd", "1; touch /tmp/pwned", "9" * 300)

MIB = 1024 * 1024

# A task that runs until it is killed; far longer than any test waits.
LONG = "sleep 600"

# Arguments that a shell would mangle if the command were re-quoted, split or pasted anywhere
# on its way to the node. A literal newline, because `$'…'` is not POSIX (dash prints it as is).
AWKWARD_ARGUMENTS = ("a b", "$HOME", "it's", "line1\nline2", "`id`", "$(id)", "*", "", "\\t")

# One process of an escaping task: it ignores SIGTERM, or leaves for a session of its own, or
# orphans itself (the second fork of a double fork; the shell's `&` was the first). Then it
# takes its lock and holds it, so the kit can see from outside whether it still lives.
HOLDER = """\
import fcntl, os, signal, sys, time
how, lock = sys.argv[1], sys.argv[2]
if how == "ignores-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif how == "new-session":
    os.setsid()
elif how == "orphan" and os.fork():
    os._exit(0)
with open(lock, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    with open(lock + ".pid", "w") as pid:
        pid.write(str(os.getpid()))
    time.sleep(600)
"""
ESCAPES = ("ignores-term", "new-session", "orphan")

# A task of the concurrency test: it says it runs (a file in the meeting directory), waits
# until `target` tasks have said so (or `patience` seconds), then holds on for `hold` seconds so
# that a task started beyond the target would overlap the others, and prints its start and
# end time. The waiting makes the expected overlap certain however slowly tasks start.
MEETING = """\
import os, sys, time
meeting, target = sys.argv[1], int(sys.argv[2])
patience, hold = float(sys.argv[3]), float(sys.argv[4])
start = time.time()
open(os.path.join(meeting, str(os.getpid())), "w").close()
deadline = time.monotonic() + patience
while len(os.listdir(meeting)) < target and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(hold)
print(repr(start), repr(time.time()))
"""


# A stand-in for the worker-node wrapper (put in place through $JOBFLEET_WORKER_NODE): it
# reports nothing and ends as the file named after its task instance id says, so the kit sees
# what each backend makes of a wrapper's end when the wrapper's own report is missing. Like the
# real wrapper, it states an exit status of 128 or more on stderr (`wrapper.status_line`).
SILENT_WRAPPER = """\
#!/bin/sh
action=$(cat "{actions}/$3")
case "$action" in
    exit\\ *)
        status="${{action#exit }}"
        [ "$status" -lt 128 ] || echo "jobfleet-worker-node: exit status $status" >&2
        exit "$status" ;;
    signal\\ *) kill -s "${{action#signal }}" $$ ;;
esac
sleep 5
exit 99
"""

# How a silent wrapper ends → the error state and reason of the shared mapping
# (`jobfleet.core.wrapper.exit_info_from_wrapper`) that every backend must give.
WRAPPER_ENDINGS: tuple[tuple[str, ErrorState, ExitReason], ...] = (
    ("exit 0", ErrorState.DONE, ExitReason.COMPLETED),
    ("exit 3", ErrorState.ERROR_RECOVERABLE, ExitReason.FAILED),
    ("exit 126", ErrorState.ERROR_FATAL, ExitReason.LAUNCHER_ERROR),
    ("exit 127", ErrorState.ERROR_FATAL, ExitReason.LAUNCHER_ERROR),
    ("exit 137", ErrorState.ERROR_RECOVERABLE, ExitReason.FAILED),
    ("exit 240", ErrorState.UNKNOWN_ERROR, ExitReason.LOST),
    ("exit 241", ErrorState.ERROR_FATAL, ExitReason.LAUNCHER_ERROR),
    ("signal KILL", ErrorState.UNKNOWN_ERROR, ExitReason.LOST),
    ("signal TERM", ErrorState.UNKNOWN_ERROR, ExitReason.LOST),
)

# A SIGKILL may be taken for an out-of-memory kill where the backend has evidence of one (the
# kernel's OOM kill count on a machine where other tests run): also right, said as such.
_SIGKILL_ENDINGS = ("exit 137", "signal KILL")


class DistributorFactory(Protocol):
    """Makes a new, not yet started distributor that gives its worker nodes `host_url`.

    With `channel_transport = "http"` it also receives `channel_token=`, which the distributor
    must hand its wrappers (`BaseClusterDistributor` takes it as is)."""

    def __call__(self, *, host_url: str, **channel_token: Any) -> ClusterDistributor: ...


def _state_and_message(info: Any) -> tuple[ErrorState, str]:
    """Read a `RemoteExitInfo` or a Jobmon-style `(state, message)` pair."""
    state, message = info
    return ErrorState(state), message


def _kill_holders(locks: dict[str, Path]) -> None:
    """End the lock holders that survived, so that a failing test leaves nothing running."""
    for lock in locks.values():
        pid_file = lock.with_name(lock.name + ".pid")
        if is_locked(lock) and pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that hold at one moment (an interval ending as another starts does
    not overlap it)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # at equal times the end (-1) sorts first
        running += step
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def running_distributor(
    make_distributor: DistributorFactory, host: KitHost
) -> Iterator[ClusterDistributor]:
    """A distributor of the kit's host, started, and stopped on leaving."""
    distributor = make_distributor(**host.distributor_kwargs())
    distributor.start()
    try:
        yield distributor
    finally:
        distributor.stop()


class DistributorTests:
    """Subclass and override `make_distributor`; set `capabilities` for what it cannot do.

    Override `cores_available` to run the concurrency tests, and lower `many_jobs` if the
    backend is slow to start a job.
    """

    capabilities = Capabilities()
    backend_name = "this"
    many_jobs: ClassVar[int] = 200
    """How many quick jobs the "every job reports exactly once" test submits at once."""
    python: ClassVar[str] = sys.executable
    """The Python the kit's helper tasks run (memory hog, lock holders, meeting)."""
    channel_transport: ClassVar[str] = "file"
    """The kit host's channel: "file", or "http" (served on loopback; the factory then also
    gets `channel_token=`). A backend whose nodes share no file system with the host sets
    "http"; a local backend may subclass its tests with "http" to run them over both."""
    state_dir: ClassVar[bool] = False
    """True: the factory also gets `state_dir=`, a private directory of the kit host's (what
    the real host passes a `BaseClusterDistributor` as `<run work dir>/distributor`)."""

    packed: ClassVar[bool] = False
    """True: the kit host submits every job as a member of a packed array element, and arrays
    ask for packing (`pack` in `task_resources`), so that every contract is checked through
    packing (jobfleet.core.packing)."""

    @pytest.fixture
    def make_distributor(self) -> DistributorFactory:
        """A factory of new, not yet started distributors: `factory(host_url=...)`."""
        raise NotImplementedError(
            "override `make_distributor` to return a factory of distributors taking host_url="
        )

    @pytest.fixture
    def kit_host(self, tmp_path: Path) -> Iterator[KitHost]:
        """The kit's host: a file channel (and log directory) under the test's tmp_path,
        served over HTTP when `channel_transport` is "http"."""
        host = KitHost(
            tmp_path / "kit", self.channel_transport, state_dir=self.state_dir, packed=self.packed
        )
        try:
            yield host
        finally:
            host.close()

    @pytest.fixture
    def distributor(
        self, make_distributor: DistributorFactory, kit_host: KitHost
    ) -> Iterator[ClusterDistributor]:
        """A started distributor reporting to `kit_host`, stopped after the test."""
        with running_distributor(make_distributor, kit_host) as distributor:
            yield distributor

    @pytest.fixture
    def task_command(self, distributor: ClusterDistributor, kit_host: KitHost) -> str:
        """What to submit: worker-node arguments for a task instance that runs until killed."""
        if not self.capabilities.runs_commands:
            return distributor.build_worker_node_command(task_instance_id=1)
        task_instance_id = kit_host.add_spec(LONG)
        return distributor.build_worker_node_command(task_instance_id=task_instance_id)

    @pytest.fixture
    def task_resources(self) -> dict[str, Any]:
        """Resources of the submitted instances; override for backends that need some."""
        resources: dict[str, Any] = {"cores": 1, "memory": "64M", "runtime": "60s"}
        if self.packed:
            resources["pack"] = {"max_tasks": 2}
        return resources

    @pytest.fixture
    def cores_available(self) -> int | None:
        """How many one-core jobs the backend's test configuration runs at once (the cores of
        a multiprocess pool; 1 for a backend that runs one job at a time). None skips the
        tests that must fill every slot or count how many jobs run at once."""
        return None

    @pytest.fixture
    def status_query_counter(self) -> Callable[[], int] | None:
        """A callable that tells how many status queries the backend has received so far.

        Backends override it (e.g. with wrappers of `squeue` first on PATH) so that the kit can
        check that status is one bulk query per call; None means it cannot be observed.
        """
        return None

    def require(self, flag: str) -> None:
        self.capabilities.require(flag, self.backend_name)

    def require_cores(self, cores_available: int | None, at_least: int = 1) -> int:
        """`cores_available`, or a skip saying why the test cannot run without more."""
        if cores_available is None:
            pytest.skip(f"the {self.backend_name} backend's tests give no cores_available")
        if cores_available < at_least:
            pytest.skip(
                f"needs cores_available >= {at_least}; the {self.backend_name} backend's "
                f"tests give {cores_available}"
            )
        return cores_available

    def with_cores(self, task_resources: dict[str, Any], cores: float = 1) -> dict[str, Any]:
        """`task_resources` asking for `cores` cores: the kit's tasks count slots in cores."""
        return {**task_resources, "cores": cores}

    def python_command(self, *args: object) -> str:
        """A shell command running the kit's Python with `args`, each quoted."""
        return shlex.join([self.python, *map(str, args)])

    # -- unknown ids (contracts 2, 3, 4) ------------------------------------------------------

    def test_unknown_ids_are_neither_submitted_nor_running(
        self, distributor: ClusterDistributor
    ) -> None:
        assert distributor.get_submitted_or_running([]) == set()
        assert distributor.get_submitted_or_running(list(UNKNOWN_IDS)) == set()

    def test_killing_unknown_ids_is_not_an_error(self, distributor: ClusterDistributor) -> None:
        distributor.terminate_task_instances(list(UNKNOWN_IDS))
        distributor.terminate_task_instances([])

    @pytest.mark.parametrize("distributor_id", UNKNOWN_IDS)
    def test_exit_info_of_unknown_id_is_unknown_and_never_raises(
        self, distributor: ClusterDistributor, distributor_id: str
    ) -> None:
        state, message = _state_and_message(distributor.get_remote_exit_info(distributor_id))
        assert state is ErrorState.UNKNOWN_ERROR
        assert message, "an unknown outcome must say why it is unknown"

    def test_unknown_ids_have_no_queueing_errors(self, distributor: ClusterDistributor) -> None:
        assert distributor.get_queueing_errors(list(UNKNOWN_IDS)) == {}

    # -- submission ---------------------------------------------------------------------------

    def test_submissions_get_distinct_string_ids(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        ids = [
            distributor.submit_to_batch_distributor(task_command, f"kit-{n}", dict(task_resources))
            for n in range(3)
        ]
        distributor.terminate_task_instances(ids)
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == 3

    def test_array_steps_are_zero_based(
        self, distributor: ClusterDistributor, task_resources: dict[str, Any]
    ) -> None:
        self.require("arrays")
        command = distributor.build_worker_node_command(array_id=1, batch_number=0)
        steps = distributor.submit_array_to_batch_distributor(
            command, "kit-array", dict(task_resources), 5
        )
        distributor.terminate_task_instances(list(steps.values()))
        assert sorted(steps) == [0, 1, 2, 3, 4]
        assert len(set(steps.values())) == 5
        assert all(isinstance(i, str) and i for i in steps.values())

    def test_status_answers_only_for_the_ids_asked(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        ids = [
            distributor.submit_to_batch_distributor(task_command, f"kit-{n}", dict(task_resources))
            for n in range(4)
        ]
        try:
            asked = [ids[0], ids[2], UNKNOWN_IDS[0]]
            assert distributor.get_submitted_or_running(asked) <= {ids[0], ids[2]}
        finally:
            distributor.terminate_task_instances(ids)

    def test_status_is_one_bulk_query(
        self,
        distributor: ClusterDistributor,
        task_command: str,
        task_resources: dict[str, Any],
        status_query_counter: Callable[[], int] | None,
    ) -> None:
        if status_query_counter is None:
            pytest.skip(f"the {self.backend_name} backend's tests give no status_query_counter")
        ids = [
            distributor.submit_to_batch_distributor(
                task_command, f"kit-bulk-{n}", dict(task_resources)
            )
            for n in range(10)
        ]
        try:
            before = status_query_counter()
            distributor.get_submitted_or_running(ids)
            assert status_query_counter() - before <= 1
        finally:
            distributor.terminate_task_instances(ids)

    # -- kill (contract 2) --------------------------------------------------------------------

    def test_killed_instance_is_not_running_and_never_done(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        distributor_id = distributor.submit_to_batch_distributor(
            task_command, "kit-kill", dict(task_resources)
        )
        assert distributor.get_submitted_or_running([distributor_id]) == {distributor_id}, (
            "the kill contract needs an instance that is still queued or running: "
            "make `task_command` (or the backend's test settings) keep it alive"
        )
        distributor.terminate_task_instances([distributor_id])
        assert distributor.get_submitted_or_running([distributor_id]) == set()
        state, _ = _state_and_message(distributor.get_remote_exit_info(distributor_id))
        assert state is not ErrorState.DONE

    # -- exit info and shutdown (contracts 4, 6) ----------------------------------------------

    def test_exit_info_is_a_remote_exit_info(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        distributor_id = distributor.submit_to_batch_distributor(
            task_command, "kit-info", dict(task_resources)
        )
        try:
            info = distributor.get_remote_exit_info(distributor_id)
        finally:
            distributor.terminate_task_instances([distributor_id])
        assert isinstance(info, RemoteExitInfo)

    def test_stop_is_idempotent(
        self, make_distributor: DistributorFactory, kit_host: KitHost
    ) -> None:
        never_started = make_distributor(**kit_host.distributor_kwargs())
        never_started.stop()
        distributor = make_distributor(**kit_host.distributor_kwargs())
        distributor.start()
        distributor.stop()
        distributor.stop()

    def test_worker_node_command_is_arguments_only(self, distributor: ClusterDistributor) -> None:
        single = distributor.build_worker_node_command(task_instance_id=7)
        array = distributor.build_worker_node_command(array_id=3, batch_number=2)
        assert "7" in single.split()
        assert distributor.worker_node_entry_point not in single
        assert {"3", "2"} <= set(array.split())
        with pytest.raises(ValueError, match="task_instance_id"):
            distributor.build_worker_node_command()
        assert distributor.worker_node_entry_point

    # -- real commands: kills (contracts 1, 2) ------------------------------------------------

    def test_killed_running_jobs_stop_and_only_the_next_job_reports(
        self,
        distributor: ClusterDistributor,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        cores_available: int | None,
    ) -> None:
        self.require("runs_commands")
        at_once = 2 if cores_available is None else min(2, cores_available)
        long = [
            kit_host.submit(distributor, LONG, resources=self.with_cores(task_resources))
            for _ in range(2)
        ]
        for job in long[:at_once]:
            kit_host.wait_report(RunningReport, job.task_instance_id)
        ids = [job.distributor_id for job in long]
        distributor.terminate_task_instances(ids)
        assert distributor.get_submitted_or_running(ids) == set(), (
            "instances are still listed after terminate_task_instances returned"
        )
        short = kit_host.submit(distributor, "true", resources=self.with_cores(task_resources))
        assert kit_host.wait_report(FinalReport, short.task_instance_id).error_state == "D"
        reports = {
            task_instance_id: [final.error_state for final in finals]
            for task_instance_id, finals in kit_host.final_reports().items()
            if task_instance_id != short.task_instance_id
        }
        # K is the wrapper's acknowledgement of the kill; any other letter is a terminal report.
        assert all(states == ["K"] for states in reports.values()), reports
        assert len(kit_host.final_reports()[short.task_instance_id]) == 1

    def test_a_killed_queued_job_never_starts(
        self,
        distributor: ClusterDistributor,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        cores_available: int | None,
    ) -> None:
        self.require("runs_commands")
        slots = self.require_cores(cores_available)
        one_core = self.with_cores(task_resources)
        fillers = [kit_host.submit(distributor, LONG, resources=one_core) for _ in range(slots)]
        for job in fillers:
            kit_host.wait_report(RunningReport, job.task_instance_id)
        queued = kit_host.submit(distributor, "true", resources=one_core)
        distributor.terminate_task_instances([queued.distributor_id])
        assert distributor.get_submitted_or_running([queued.distributor_id]) == set()
        # Free every slot: a queued instance that was not really dropped would start now,
        # before a job submitted later, whose report tells that the backend moved on.
        distributor.terminate_task_instances([job.distributor_id for job in fillers])
        witness = kit_host.submit(distributor, "true", resources=one_core)
        assert kit_host.wait_report(FinalReport, witness.task_instance_id).error_state == "D"
        assert queued.task_instance_id not in kit_host.started(), "the killed queued job ran"
        finals = kit_host.final_reports().get(queued.task_instance_id, [])
        states = [final.error_state.value for final in finals]
        assert set(states) <= {"K"}, f"the killed queued job was reported {states}"

    def _start_escaping_task(
        self, distributor: ClusterDistributor, host: KitHost, resources: dict[str, Any]
    ) -> tuple[Submitted, dict[str, Path]]:
        """A task whose children try every way out of its process group; wait for their locks."""
        script = host.root / "holder.py"
        script.write_text(HOLDER)
        locks = {how: host.root / f"{how}.lock" for how in ESCAPES}
        for lock in locks.values():
            lock.touch()
        children = [f"{self.python_command(script, how, lock)} &" for how, lock in locks.items()]
        job = host.submit(distributor, " ".join([*children, "wait"]), resources=resources)
        wait_for(
            lambda: all(is_locked(lock) for lock in locks.values()),
            "the task's children to take their locks",
        )
        return job, locks

    def test_kill_leaves_no_process_of_the_task(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        self.require("local_processes")
        job, locks = self._start_escaping_task(distributor, kit_host, task_resources)
        try:
            distributor.terminate_task_instances([job.distributor_id])
            # No waiting: terminate_task_instances returns once nothing of the task runs.
            alive = [how for how, lock in locks.items() if is_locked(lock)]
        finally:
            _kill_holders(locks)
        assert alive == [], f"still running after terminate_task_instances returned: {alive}"

    def test_stop_leaves_no_process_of_the_task(
        self,
        make_distributor: DistributorFactory,
        kit_host: KitHost,
        task_resources: dict[str, Any],
    ) -> None:
        self.require("runs_commands")
        self.require("local_processes")
        locks: dict[str, Path] = {}
        try:
            with running_distributor(make_distributor, kit_host) as distributor:
                _, locks = self._start_escaping_task(distributor, kit_host, task_resources)
            alive = [how for how, lock in locks.items() if is_locked(lock)]
        finally:
            _kill_holders(locks)
        assert alive == [], f"still running after stop() returned: {alive}"

    # -- real commands: what reaches the task -------------------------------------------------

    def test_batch_and_job_environment_reach_the_task(
        self,
        make_distributor: DistributorFactory,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.require("runs_commands")
        # Batch-wide: in the host's environment before the distributor is made.
        monkeypatch.setenv("JOBFLEET_KIT_BATCH", "batch wide")
        show = 'printf "%s|%s" "${JOBFLEET_KIT_BATCH-unset}" "${JOBFLEET_KIT_JOB-unset}"'
        with running_distributor(make_distributor, kit_host) as distributor:
            resources = self.with_cores(task_resources)
            with_job = kit_host.submit(
                distributor, show, resources=resources, env={"JOBFLEET_KIT_JOB": "job one"}
            )
            without = kit_host.submit(distributor, show, resources=resources)
            first = kit_host.wait_report(FinalReport, with_job.task_instance_id)
            second = kit_host.wait_report(FinalReport, without.task_instance_id)
        assert first.stdout_tail == "batch wide|job one"
        assert second.stdout_tail == "batch wide|unset", "a job's variable leaked to another"

    def test_arguments_survive_quoting(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        command = shlex.join(["sh", "-c", 'printf "[%s]" "$@"', "_", *AWKWARD_ARGUMENTS])
        job = kit_host.submit(distributor, command, resources=self.with_cores(task_resources))
        final = kit_host.wait_report(FinalReport, job.task_instance_id)
        assert final.error_state == "D", final.message
        assert final.stdout_tail == "".join(f"[{arg}]" for arg in AWKWARD_ARGUMENTS)

    def test_array_steps_run_their_own_commands(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        self.require("arrays")
        commands = [f'echo "task {n} step $JOBFLEET_ARRAY_STEP_ID"' for n in range(5)]
        steps = kit_host.submit_array(distributor, commands, self.with_cores(task_resources))
        finals = [kit_host.wait_report(FinalReport, step.task_instance_id) for step in steps]
        assert [f.stdout_tail for f in finals] == [f"task {n} step {n}\n" for n in range(5)]
        assert [f.error_state for f in finals] == ["D"] * 5

    # -- real commands: reporting (contract 1) ------------------------------------------------

    def test_every_one_of_many_quick_jobs_reports_exactly_once(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        resources = self.with_cores(task_resources)
        jobs = [
            kit_host.submit(distributor, "true", resources=resources) for _ in range(self.many_jobs)
        ]
        expected = {job.task_instance_id for job in jobs}
        timeout = DEFAULT_TIMEOUT + self.many_jobs  # a second per job on the slowest machine
        wait_for(lambda: expected <= set(kit_host.final_reports()), "every job's report", timeout)
        ids = [job.distributor_id for job in jobs]
        wait_for(lambda: not distributor.get_submitted_or_running(ids), "every job to end")
        # Nothing runs any more, so every report there will ever be is in the channel now.
        finals = kit_host.final_reports()
        assert set(finals) == expected, (
            f"reports of instances never submitted: {set(finals) - expected}"
        )
        repeated = {ti: len(reports) for ti, reports in finals.items() if len(reports) > 1}
        assert repeated == {}, f"instances reported more than once: {repeated}"
        not_done = {ti: r[0].error_state for ti, r in finals.items() if r[0].error_state != "D"}
        assert not_done == {}

    # -- real commands: scheduling --------------------------------------------------------------

    @pytest.mark.parametrize("cores", [1, 2], ids=["1-core-jobs", "2-core-jobs"])
    def test_as_many_jobs_run_at_once_as_the_cores_allow(
        self,
        distributor: ClusterDistributor,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        cores_available: int | None,
        cores: int,
    ) -> None:
        self.require("runs_commands")
        self.require("shared_filesystem")
        available = self.require_cores(cores_available, at_least=1 if cores == 1 else 4)
        expected = max(1, available // cores)
        meeting = kit_host.root / f"meeting-{cores}"
        meeting.mkdir(parents=True)
        script = kit_host.root / "meeting.py"
        script.write_text(MEETING)
        # Patience: how long the first tasks wait for the others to start. Hold: long enough
        # that one task too many would start while the others still run.
        command = self.python_command(script, meeting, expected, DEFAULT_TIMEOUT / 2, 1.0)
        resources = self.with_cores(task_resources, cores)
        jobs = [
            kit_host.submit(distributor, command, resources=resources) for _ in range(expected + 1)
        ]
        finals = [kit_host.wait_report(FinalReport, job.task_instance_id) for job in jobs]
        assert [f.error_state for f in finals] == ["D"] * len(jobs), finals
        intervals = [tuple(map(float, f.stdout_tail.split())) for f in finals]
        peak = peak_overlap([(start, end) for start, end in intervals])
        assert peak == expected, (
            f"{peak} jobs of {cores} core(s) ran at once; {available} cores allow {expected}"
        )

    def test_a_big_waiting_job_does_not_block_smaller_ones(
        self,
        distributor: ClusterDistributor,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        cores_available: int | None,
    ) -> None:
        self.require("runs_commands")
        available = self.require_cores(cores_available, at_least=2)
        small = self.with_cores(task_resources)
        first = kit_host.submit(distributor, LONG, resources=small)
        kit_host.wait_report(RunningReport, first.task_instance_id)
        big = kit_host.submit(
            distributor, LONG, resources=self.with_cores(task_resources, available)
        )
        later = kit_host.submit(distributor, LONG, resources=small)
        kit_host.wait_report(RunningReport, later.task_instance_id)
        assert big.task_instance_id not in kit_host.started(), (
            "the job needing every core started while one was taken"
        )
        assert distributor.get_submitted_or_running([big.distributor_id]) == {big.distributor_id}

    # -- real commands: limits and lost wrappers ------------------------------------------------

    def test_memory_limit_is_a_resource_error(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        self.require("limits_memory")
        hog = self.python_command("-c", "import time\nb = b'x' * (400 << 20)\ntime.sleep(60)")
        # The backend's share covers the wrapper too; the spec's 100 MiB is what must bite.
        resources = {**self.with_cores(task_resources), "memory": "1G"}
        job = kit_host.submit(distributor, hog, resources=resources, memory=100 * MIB)
        final = kit_host.wait_report(FinalReport, job.task_instance_id)
        assert (final.error_state, _reason(final)) == ("Z", "oom"), final.message

    def test_runtime_limit_is_a_resource_error(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        self.require("limits_runtime")
        resources = self.with_cores(task_resources)
        job = kit_host.submit(distributor, LONG, resources=resources, runtime=1)
        final = kit_host.wait_report(FinalReport, job.task_instance_id)
        assert (final.error_state, _reason(final)) == ("Z", "timeout"), final.message

    def test_a_wrapper_that_never_reported_is_read_with_the_shared_table(
        self,
        make_distributor: DistributorFactory,
        kit_host: KitHost,
        task_resources: dict[str, Any],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.require("runs_commands")
        self.require("shared_filesystem")
        actions = tmp_path / "actions"
        actions.mkdir()
        wrapper = tmp_path / "silent-wrapper"
        wrapper.write_text(SILENT_WRAPPER.format(actions=actions))
        wrapper.chmod(0o755)
        monkeypatch.setenv("JOBFLEET_WORKER_NODE", shlex.quote(str(wrapper)))
        expected: dict[str, tuple[str, ErrorState, ExitReason]] = {}
        with running_distributor(make_distributor, kit_host) as distributor:
            for action, state, reason in WRAPPER_ENDINGS:
                task_instance_id = kit_host.add_spec("true")
                (actions / str(task_instance_id)).write_text(action)
                job = distributor.submit_to_batch_distributor(
                    distributor.build_worker_node_command(task_instance_id=task_instance_id),
                    f"kit-{task_instance_id}",
                    self.with_cores(task_resources),
                )
                expected[job] = (action, state, reason)
            infos = wait_for(
                lambda: _all_finalized(distributor, list(expected)),
                "every silent wrapper's end to be known",
            )
        assert kit_host.final_reports() == {}, "the stand-in wrapper reports nothing"
        for job, (action, state, reason) in expected.items():
            info = infos[job]
            seen = (info.error_state, info.record.reason if info.record else None)
            if action in _SIGKILL_ENDINGS and seen == (ErrorState.RESOURCE_ERROR, ExitReason.OOM):
                assert "out of memory" in info.error_message, info.error_message
                continue
            assert seen == (state, reason), f"{action}: {info.error_message}"
            assert info.error_message, f"{action}: the message must say what happened"

    def test_a_wrapper_killed_by_sigkill_is_unknown_not_done(
        self, distributor: ClusterDistributor, kit_host: KitHost, task_resources: dict[str, Any]
    ) -> None:
        self.require("runs_commands")
        self.require("local_processes")
        job = kit_host.submit(distributor, LONG, resources=self.with_cores(task_resources))
        running = kit_host.wait_report(RunningReport, job.task_instance_id)
        wrapper_pid, pid = running.wrapper_pid, running.pid
        assert wrapper_pid is not None, f"no wrapper pid in {running}"
        assert pid is not None, f"no pid in {running}"
        try:
            os.kill(wrapper_pid, signal.SIGKILL)
            wait_for(
                lambda: not distributor.get_submitted_or_running([job.distributor_id]),
                "the backend to notice that the wrapper is gone",
            )
            info = wait_for(
                lambda: _finalized(distributor.get_remote_exit_info(job.distributor_id)),
                "a finalized exit info",
            )
            # Contract 6: after stop(), not even the task the dead wrapper left behind runs.
            distributor.stop()
            wait_for(lambda: not _alive(pid), "the dead wrapper's task to be ended")
        finally:
            # A failing backend must not leave the task running after the test.
            _kill_group(pid)
        state, message = _state_and_message(info)
        assert state is ErrorState.UNKNOWN_ERROR, f"{state}: {message}"


def _reason(final: FinalReport) -> str | None:
    """The exit reason of a final report (None when it carries no exit record)."""
    return final.exit.reason.value if final.exit is not None else None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _all_finalized(
    distributor: ClusterDistributor, ids: list[str]
) -> dict[str, RemoteExitInfo] | None:
    """Every id's exit info once none is running and each is finalized; None until then."""
    if distributor.get_submitted_or_running(ids):
        return None
    infos = {job: distributor.get_remote_exit_info(job) for job in ids}
    return infos if all(info.finalized for info in infos.values()) else None


def _finalized(info: Any) -> Any:
    """The exit info once the backend's accounting will not change it (Jobmon pairs always)."""
    return info if getattr(info, "finalized", True) else None
