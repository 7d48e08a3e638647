"""The worker-node wrapper through its real console script, with the dummy backend's worker node
and a real file channel: what it reports, what it leaves behind, what it costs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.channel import Channel, Event, EventKind, TaskSpec, open_channel
from jobfleet.core.testing.host import is_locked, wait_for
from jobfleet.core.wrapper import (
    USAGE_ERROR,
    VERSION_MISMATCH,
    WRAPPER_FAILED,
    status_from_output,
)

WRAPPER = shutil.which("jobfleet-worker-node")
MIB = 1024 * 1024


def has_v1_memory_cgroup() -> bool:
    try:
        with open("/proc/self/cgroup", encoding="ascii") as lines:
            path = next(line.split(":")[2].strip() for line in lines if ":memory:" in line)
    except (OSError, StopIteration):
        return False
    return os.access(f"/sys/fs/cgroup/memory{path}", os.W_OK)


needs_cgroup = pytest.mark.skipif(
    not has_v1_memory_cgroup(), reason="no writable v1 memory cgroup controller on this machine"
)


@dataclass
class Outcome:
    returncode: int
    stderr: str
    events: list[Event] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        finals = [e for e in self.events if e.kind is EventKind.FINAL]
        assert len(finals) == 1, f"expected one final report, got {len(finals)}: {self.stderr}"
        return dict(finals[0].data)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]


class Host:
    """A minimal host: writes specs into a file channel and runs the wrapper on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.channel: Channel = open_channel(f"file://{root / 'channel'}", create=True)
        self.logs = root / "logs"
        self._next_id = 1

    def spec(self, command: str, **fields: Any) -> TaskSpec:
        task_instance_id = fields.pop("task_instance_id", self._next_id)
        self._next_id = task_instance_id + 1
        defaults: dict[str, Any] = {
            "name": f"task-{task_instance_id}",
            "stdout_dir": str(self.logs),
            "stderr_dir": str(self.logs),
            "heartbeat_interval": 30.0,
        }
        spec = TaskSpec(
            task_instance_id=task_instance_id, command=command, **{**defaults, **fields}
        )
        self.channel.put_spec(spec)
        return spec

    def argv(self, *args: str, cluster: str = "dummy") -> list[str]:
        assert WRAPPER, "the jobfleet-worker-node console script is not installed"
        return [
            WRAPPER,
            *args,
            "--cluster",
            cluster,
            "--host-url",
            self.channel.url,
            "--kill-grace",
            "1",
        ]

    def start(
        self, task_instance_id: int, *options: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        argv = self.argv("job", "--task-instance-id", str(task_instance_id), *options)
        return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=self.env(env))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
        environ["JOBFLEET_DISTRIBUTOR_ID"] = "dist-1"
        environ.update(extra or {})
        return environ

    def finish(self, process: subprocess.Popen[str]) -> Outcome:
        _, stderr = process.communicate(timeout=120)
        events, _ = self.channel.read_events()
        return Outcome(process.returncode, stderr, events)

    def run(
        self, command: str, *options: str, env: dict[str, str] | None = None, **fields: Any
    ) -> Outcome:
        spec = self.spec(command, **fields)
        return self.finish(self.start(spec.task_instance_id, *options, env=env))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# -- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "state", "reason", "code"),
    [
        ("exit 0", "D", "completed", 0),
        ("exit 3", "E", "failed", 3),
        ("exit 127", "F", "launcher_error", 127),
        ("no-such-command-anywhere", "F", "launcher_error", 127),
        ("kill -SEGV $$", "E", "failed", 128 + signal.SIGSEGV),
    ],
)
def test_exit_maps_to_state_and_reason(
    host: Host, command: str, state: str, reason: str, code: int
) -> None:
    outcome = host.run(command)
    assert outcome.returncode == code
    final = outcome.final
    assert final["error_state"] == state
    assert final["exit"]["reason"] == reason
    assert outcome.kinds()[0] is EventKind.RUNNING
    assert final["distributor_id"] == "dist-1"


def test_signal_death_has_no_exit_code(host: Host) -> None:
    final = host.run("kill -SEGV $$").final
    assert final["exit"]["exit_code"] is None
    assert final["exit"]["signal"] == signal.SIGSEGV


def test_runtime_limit_is_a_timeout_and_resource_error(host: Host) -> None:
    outcome = host.run("sleep 60", runtime=1)
    final = outcome.final
    assert final["exit"]["reason"] == "timeout"
    assert final["error_state"] == "Z"


def test_runtime_limit_escalates_to_sigkill_when_term_is_ignored(host: Host) -> None:
    final = host.run("trap '' TERM; sleep 60 & wait; sleep 60", runtime=1).final
    assert final["exit"]["reason"] == "timeout"
    assert final["error_state"] == "Z"


@needs_cgroup
def test_memory_limit_in_its_own_cgroup_is_oom(host: Host) -> None:
    allocate = f"{sys.executable} -c 'b = bytearray(400 * 1024 * 1024); print(len(b))'"
    final = host.run(allocate, memory=100 * MIB).final
    assert final["exit"]["reason"] == "oom"
    assert final["error_state"] == "Z"
    assert "OOM" in final["message"]


def test_memory_limit_without_cgroup_is_enforced_by_sampling(host: Host, tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(ALLOCATE.format(size=300).replace("time.sleep(0.5)", "time.sleep(60)"))
    outcome = host.run(f"{sys.executable} {script}", "--cgroup", "never", memory=100 * MIB)
    final = outcome.final
    assert final["exit"]["reason"] == "oom"
    assert final["error_state"] == "Z"
    assert "wrapper killed it" in final["message"]


@needs_cgroup
def test_memory_limit_of_a_cgroup_the_test_creates_is_oom(host: Host, tmp_path: Path) -> None:
    # The backend's way (Slurm, Kubernetes): the whole job sits in a limited cgroup and the
    # spec carries no limit of its own.
    with open("/proc/self/cgroup", encoding="ascii") as lines:
        own = next(line.split(":")[2].strip() for line in lines if ":memory:" in line)
    cgroup = Path(f"/sys/fs/cgroup/memory{own}/jobfleet-test-{os.getpid()}")
    cgroup.mkdir()
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(150 * MIB))
        memsw = cgroup / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(150 * MIB))
        spec = host.spec(f"{sys.executable} -c 'b = bytearray(400 * 1024 * 1024)'")
        argv = host.argv("job", "--task-instance-id", str(spec.task_instance_id))
        enter = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"'
        process = subprocess.Popen(
            ["/bin/sh", "-c", enter, "enter", *argv],
            stderr=subprocess.PIPE,
            text=True,
            env=host.env(),
        )
        final = host.finish(process).final
    finally:
        wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip(), "an empty test cgroup")
        cgroup.rmdir()
    assert final["exit"]["reason"] == "oom"
    assert final["error_state"] == "Z"


# -- environment, signals, processes ---------------------------------------------------------


def test_environment_reaches_the_task(host: Host) -> None:
    command = 'echo "$JOBFLEET_TASK_INSTANCE_ID|$JOBFLEET_RUN_ID|$GREETING|$JOBFLEET_ARRAY_STEP_ID"'
    final = host.run(
        command, task_instance_id=41, run_id=7, environment={"GREETING": "hi there"}
    ).final
    assert final["stdout_tail"] == "41|7|hi there|\n"


def test_array_step_comes_from_the_backend_worker_node(host: Host) -> None:
    host.spec("echo first", task_instance_id=100)
    host.spec('echo "second $JOBFLEET_ARRAY_STEP_ID"', task_instance_id=101)
    host.channel.put_array(5, 0, {0: 100, 1: 101})
    argv = host.argv("array", "--array-id", "5", "--batch-number", "0")
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env=host.env({"JOBFLEET_ARRAY_STEP_ID": "1"})
    )
    outcome = host.finish(process)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.final["stdout_tail"] == "second 1\n"
    assert {e.task_instance_id for e in outcome.events} == {101}


def test_forwarded_user_signal_reaches_the_task(host: Host, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spec = host.spec(
        f"trap 'echo got-usr1; exit 0' USR1; touch {ready}; while :; do sleep 0.05; done"
    )
    process = host.start(spec.task_instance_id)
    wait_for(ready.exists, "the task's trap")
    process.send_signal(signal.SIGUSR1)
    outcome = host.finish(process)
    assert outcome.final["stdout_tail"] == "got-usr1\n"
    assert outcome.final["error_state"] == "D"


ESCAPING_TASK = """
lock={lock}; pids={pids}
# A child in a new session that ignores SIGTERM, an orphan (double fork), and a plain child,
# each holding the lock file open and locked.
setsid sh -c 'trap "" TERM HUP; exec flock "$0" sleep 1000' "$lock" &
sh -c 'sh -c "exec flock -s \\"$0\\" sleep 1000" "$0" &' "$lock"
flock -s "$lock" sleep 1000 &
sleep 1000
"""


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "no-cgroup"])
def test_sigterm_to_the_wrapper_ends_the_whole_tree(
    host: Host, tmp_path: Path, cgroup: bool
) -> None:
    if cgroup and not has_v1_memory_cgroup():
        pytest.skip("no writable v1 memory cgroup controller on this machine")
    lock = tmp_path / "lock"
    lock.touch()
    spec = host.spec(ESCAPING_TASK.format(lock=lock, pids=tmp_path / "pids"))
    process = host.start(spec.task_instance_id, "--cgroup", "always" if cgroup else "never")
    wait_for(lambda: is_locked(lock), "the task's children to take the lock")
    process.send_signal(signal.SIGTERM)
    outcome = host.finish(process)
    assert outcome.final["exit"]["reason"] == "cancelled"
    assert outcome.final["error_state"] == "K"
    assert not is_locked(lock), "a process of the task survived the wrapper"


def test_children_left_behind_are_killed_when_the_task_ends(host: Host, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    outcome = host.run(f"setsid flock {lock} sleep 1000 & sleep 0.2; exit 0")
    assert outcome.final["error_state"] == "D"
    assert not is_locked(lock)


# -- output ---------------------------------------------------------------------------------


def test_non_utf8_output_is_logged_byte_for_byte(host: Host) -> None:
    payload = b"caf\xe9 \xff\xfe ok \xe2\x82\xac\n"
    script = f"import sys; sys.stdout.buffer.write({payload!r}); sys.stderr.buffer.write(b'\\xc3')"
    outcome = host.run(f'{sys.executable} -c "{script}"')
    final = outcome.final
    assert Path(final["stdout_path"]).read_bytes() == payload
    assert final["stdout_tail"] == "caf\ufffd \ufffd\ufffd ok €\n"
    assert final["stderr_tail"] == "\ufffd"
    assert Path(final["stderr_path"]).read_bytes() == b"\xc3"


@pytest.mark.slow
def test_200_megabytes_of_output_are_logged_intact_in_bounded_memory(host: Host) -> None:
    # Deterministic bytes, invalid UTF-8 included, so the log can be checked exactly.
    block = bytes(range(256)) * 4096  # 1 MiB
    script = (
        "import sys\nb = bytes(range(256)) * 4096\nfor _ in range(200): sys.stdout.buffer.write(b)"
    )
    spec = host.spec(f"{sys.executable} -c '{script}'")
    argv = host.argv("job", "--task-instance-id", str(spec.task_instance_id))
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=host.env())
    # The wrapper's own peak, read from /proc while it runs: VmHWM belongs to the program
    # after exec. (ru_maxrss would not do: it starts from this test process's size at fork,
    # well over 100 MB in a full pytest run — the very fork floor the wrapper itself avoids.)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _high_water_mark(process.pid))
        time.sleep(0.01)  # sampling a running process: there is no condition to wait on
    events, _ = host.channel.read_events()
    final = Outcome(process.returncode, process.stderr.read(), events).final
    expected = hashlib.sha256(block * 200).hexdigest()
    log = Path(final["stdout_path"])
    assert log.stat().st_size == 200 * MIB
    digest = hashlib.sha256()
    with open(log, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    assert digest.hexdigest() == expected
    assert len(final["stdout_tail"]) == 10_000
    assert 0 < peak < 100 * MIB


def _high_water_mark(pid: int) -> int:
    """VmHWM of a process in bytes, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_unwritable_log_directory_still_gives_a_final_report(host: Host, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    marker = tmp_path / "ran"
    outcome = host.run(f"touch {marker}", stdout_dir=str(blocker / "logs"))
    assert outcome.returncode == WRAPPER_FAILED
    # Stated whole on stderr too: Slurm's accounting would show 240 as 112.
    assert status_from_output(outcome.stderr) == WRAPPER_FAILED
    final = outcome.final
    assert final["error_state"] == "F"
    assert str(blocker / "logs") in final["message"]
    assert not marker.exists(), "the command must not run without its log"


def test_hostile_task_name_gives_a_safe_log_path_and_runs_nothing(
    host: Host, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    name = ("../" * 20 + f'it\'s "quoted" $(touch {pwned}) `touch {pwned}` ') * 5
    name = (name + "x" * 500)[:500]
    outcome = host.run("echo fine", name=name)
    final = outcome.final
    assert final["error_state"] == "D"
    path = Path(final["stdout_path"])
    assert path.parent == host.logs
    assert len(path.name.encode()) <= 255
    assert path.read_text() == "fine\n"
    assert not pwned.exists()


# -- heartbeats and failures of the wrapper --------------------------------------------------


def test_heartbeats_arrive_while_a_silent_task_runs(host: Host) -> None:
    outcome = host.run("sleep 1", heartbeat_interval=0.1)
    beats = [e for e in outcome.events if e.kind is EventKind.HEARTBEAT]
    assert len(beats) >= 3
    assert outcome.kinds()[-1] is EventKind.FINAL


def test_missing_spec_is_reported(host: Host) -> None:
    outcome = host.finish(host.start(999))
    assert outcome.returncode == WRAPPER_FAILED
    assert outcome.final["error_state"] == "F"
    assert "999" in outcome.final["message"]


def test_protocol_version_mismatch_is_reported(host: Host) -> None:
    spec = host.spec("exit 0")
    path = (
        Path(host.channel.url.removeprefix("file://")) / "specs" / f"{spec.task_instance_id}.json"
    )
    data = json.loads(path.read_text())
    data["protocol_version"] = 99
    path.write_text(json.dumps(data))
    outcome = host.finish(host.start(spec.task_instance_id))
    assert outcome.returncode == VERSION_MISMATCH
    assert outcome.final["error_state"] == "F"
    assert "99" in outcome.final["message"]


def test_unknown_cluster_is_reported(host: Host) -> None:
    spec = host.spec("exit 0")
    argv = host.argv("job", "--task-instance-id", str(spec.task_instance_id), cluster="nosuch")
    outcome = host.finish(subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=host.env()))
    assert outcome.returncode == WRAPPER_FAILED
    assert outcome.final["error_state"] == "F"
    assert "pip install jobfleet-nosuch" in outcome.final["message"]


def test_unreachable_channel_fails_with_a_message(tmp_path: Path) -> None:
    assert WRAPPER
    argv = [
        WRAPPER,
        "job",
        "--task-instance-id",
        "1",
        "--cluster",
        "dummy",
        "--host-url",
        f"file://{tmp_path}/none",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == WRAPPER_FAILED
    assert "cannot open the host channel" in result.stderr


def test_internal_failure_is_reported_with_its_traceback(
    host: Host, install_plugin, good_plugin
) -> None:
    broken = (
        good_plugin
        + """
    class WorkerNode(WorkerNode):
        def get_exit_info(self, exit_code, error_msg):
            raise RuntimeError("the backend's classifier broke")
    """
    )
    hooks = (
        "from faulty_impl import Queue, Distributor, WorkerNode\n"
        "def get_cluster_queue_class(): return Queue\n"
        "def get_cluster_distributor_class(): return Distributor\n"
        "def get_cluster_worker_node_class(): return WorkerNode\n"
    )
    site = install_plugin(
        "jobfleet-faulty",
        {"faulty_impl": broken, "faulty_plugin": hooks},
        {"faulty": "faulty_plugin"},
    )
    spec = host.spec("exit 0")
    argv = host.argv("job", "--task-instance-id", str(spec.task_instance_id), cluster="faulty")
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env=host.env({"PYTHONPATH": str(site)})
    )
    outcome = host.finish(process)
    assert outcome.returncode == WRAPPER_FAILED
    final = outcome.final
    assert final["error_state"] == "U"
    assert "Traceback" in final["message"]
    assert "the backend's classifier broke" in final["message"]


# -- usage ----------------------------------------------------------------------------------

ALLOCATE = """
import sys
import time
size = {size} * 1024 * 1024
block = bytearray(size)
for i in range(0, size, 4096):
    block[i] = 1
import time
time.sleep(0.5)  # the task holds its peak for a while, as real tasks do
"""


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "sampled"])
def test_maxrss_of_300_megabytes_under_a_fat_parent(
    host: Host, tmp_path: Path, cgroup: bool
) -> None:
    if cgroup and not has_v1_memory_cgroup():
        pytest.skip("no writable v1 memory cgroup controller on this machine")
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATE.format(size=300))
    spec = host.spec(f"{sys.executable} {script}")
    options = ["--cgroup", "always" if cgroup else "never"]
    wrapper_args = ["job", "--task-instance-id", str(spec.task_instance_id)]
    wrapper_args += ["--cluster", "dummy", "--host-url", host.channel.url, *options]
    # The wrapper runs inside a process that already holds 400 MB, as when a fat host forks
    # it: ru_maxrss of a forked child starts from that, and must not leak into the number.
    fat = (
        "import sys\n"
        "ballast = bytearray(400 * 1024 * 1024)\n"
        "for i in range(0, len(ballast), 4096): ballast[i] = 1\n"
        "from jobfleet.worker_node.cli import main\n"
        f"sys.exit(main({wrapper_args!r}))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", fat], stderr=subprocess.PIPE, text=True, env=host.env()
    )
    final = host.finish(process).final
    assert final["error_state"] == "D", final["message"]
    maxrss = final["usage"]["maxrss"]
    details = json.loads(final["usage"]["usage_str"])
    assert abs(maxrss - 300 * MIB) <= 0.10 * 300 * MIB, (maxrss / MIB, details)
    assert details["maxrss_source"] == ("cgroup" if cgroup else "sampled")


def test_version_help_and_usage_errors() -> None:
    assert WRAPPER
    version = subprocess.run([WRAPPER, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert version.stdout.startswith("jobfleet-worker-node 0.1.0 (channel protocol 1)")
    help_text = subprocess.run(
        [WRAPPER, "job", "--help"], capture_output=True, text=True, check=False
    )
    assert "--task-instance-id" in help_text.stdout
    assert "--cgroup" in help_text.stdout
    top = subprocess.run([WRAPPER, "--help"], capture_output=True, text=True, check=False).stdout
    assert "240 wrapper failed" in top
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    missing = subprocess.run(
        [WRAPPER, "job", "--task-instance-id", "1", "--cluster", "dummy"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert missing.returncode == USAGE_ERROR
    assert "--host-url is required" in missing.stderr
    negative = subprocess.run(
        [WRAPPER, "job", "--task-instance-id", "-3"], capture_output=True, text=True, check=False
    )
    assert negative.returncode == USAGE_ERROR


def test_only_the_named_plugin_is_imported(host: Host, install_plugin) -> None:
    # A broken plugin installed beside dummy: the wrapper must never import it.
    site = install_plugin(
        "jobfleet-landmine",
        {"landmine_plugin": "raise SystemExit('the wrapper imported a plugin it did not need')"},
        {"landmine": "landmine_plugin"},
    )
    spec = host.spec("exit 0")
    argv = host.argv("job", "--task-instance-id", str(spec.task_instance_id))
    env = host.env({"PYTHONPATH": str(site)})
    outcome = host.finish(subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.final["error_state"] == "D"


def test_array_step_from_specs_stored_with_the_batch(host: Host) -> None:
    specs = {
        step: TaskSpec(200 + step, 'echo "step $JOBFLEET_ARRAY_STEP_ID of 3"', f"s{step}")
        for step in range(3)
    }
    host.channel.put_array_specs(6, 2, specs)
    argv = host.argv("array", "--array-id", "6", "--batch-number", "2")
    env = host.env({"JOBFLEET_ARRAY_STEP_ID": "2"})
    outcome = host.finish(subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.final["stdout_tail"] == "step 2 of 3\n"
    assert {e.task_instance_id for e in outcome.events} == {202}
