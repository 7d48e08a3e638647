"""`jobfleet run` on a real single-node Slurm against the same commands as one raw `sbatch --array`.

    uv run python bench/slurm.py [--tasks 1000] [--quick] [--cpus 8] [--poll-min 1]
                                 [--poll-max 2] [--pack max_tasks=50] [--defaults]
                                 [--explain] [--json]

Starts a throwaway Slurm with accounting (munged, MariaDB, slurmdbd, slurmctld, slurmd: the
`SlurmCluster` of plugins/slurm/tests/slurm_cluster.py, loaded by path as the tests' conftest
does; it needs root and the Debian packages), one node advertising `--cpus` CPUs, and stops it
at the end. Its start is timed and reported apart from the ratio. Then, after one untimed
warm-up of each side (8 tasks: the node's first jobs, and the bytecode cache of jobfleet's CLI
and worker-node wrapper):

1. Baseline: one `sbatch --parsable --array=0-(N-1) task.sh` per 1000 tasks, `task.sh` being
   `#!/bin/sh` + `true`, and `squeue -h -j ID` every 0.5 s until the whole array has left
   squeue. Timed from sbatch to the first empty answer.
2. jobfleet: a plain-text task file of N lines of `true`, run by the real CLI
   `jobfleet run --cluster slurm --json tasks.txt` in a new working directory (ledger and run
   directory under `./.jobfleet`), with `JOBFLEET_SLURM_POLL_MIN` / `_POLL_MAX` from
   `--poll-min` / `--poll-max` (1 s and 2 s here; the plugin's defaults are 1 s and 30 s,
   and `--defaults` runs it once more with them). Timed from starting the process to its
   exit, every task done. Each array job runs the worker-node wrapper around `true`, so
   jobfleet does more work per task than the baseline: that is part of what is measured.
3. jobfleet packed: the same with `jobfleet run --pack max_tasks=50` (`--pack`; `--pack off`
   leaves this run out): each array element runs 50 members one after another in one pack
   worker, each still its own task instance with its own report (jobfleet.core.packing).

The Slurm calls of the jobfleet run are counted by wrapper scripts for `squeue`, `sacct`,
`sbatch`, `scancel`, `scontrol` and `sinfo`, first on its PATH, that append the command's name
and the time to a log and `exec` the real binary. Printed: the calls of each command, squeue
calls per minute and the most squeue calls within any 1-second window (the distributor's
squeue interval is at least poll_min, so at most 1 for poll_min ≥ 1 s; every gap under 1 s is
listed with how long before the end it came), and sbatch calls (1000 tasks are one array:
MaxArraySize is 1001). The service's rounds are not visible from outside the process.

Where the time goes: from sacct's records of the array tasks afterwards (whole seconds), the
time to the first sbatch, Slurm running the array (first start to last end) and the tail (last
end to done), and the tasks' TotalCPU; and the CPU spent during each run, split into the jobs'
cgroups (cpuacct of the node: batch scripts, wrappers, tasks), the Slurm daemons (with their
reaped children: slurmd's `su` for a login environment lands there), the submitter (the
jobfleet CLI and the Slurm commands it ran) and the rest (slurmstepd, which runs outside the
job cgroups, the kernel, and whatever else runs on the machine). `--explain` adds two runs:
the baseline with the `--export=ALL,JOBFLEET_ARRAY_OFFSET=N` the Slurm distributor passes (a
variable list, so sbatch sets SLURM_GET_USER_ENV=1 and slurmd runs `su - USER` before each
job), and, for at most 1000 tasks, a what-if jobfleet run whose sbatch wrapper turns
`--export=ALL,JOBFLEET_ARRAY_OFFSET=0` into `--export=ALL` (the same job environment: the
worker node reads a missing offset as 0).

Targets: ratio jobfleet/baseline ≤ 1.5 without packing and ≤ 1.0 with it (faster than the raw
array), at most one squeue per round. Nothing here is asserted
by a test: the machine is shared and noisy, so the ratio means more than the absolute times.
Subprocesses get a bytecode cache of their own (PYTHONPYCACHEPREFIX, filled by the warm-up),
as an installed jobfleet has: with PYTHONDONTWRITEBYTECODE=1 every wrapper would otherwise
recompile what it imports.
"""

from __future__ import annotations

import argparse
import bisect
import compileall
import importlib.util
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import jobfleet
from jobfleet.plugins.slurm.worker_node import OFFSET_VARIABLE

TARGET_RATIO = 1.5  # without packing
PACKED_TARGET_RATIO = 1.0  # with packing: faster than the raw array
DEFAULT_PACK = "max_tasks=50"
CHUNK = 1000  # tasks per array: jobfleet's default --array-size, below MaxArraySize 1001
WARM_UP_TASKS = 8
BASELINE_POLL = 0.5  # seconds between the baseline's squeue calls
COMMANDS = ("squeue", "sacct", "sbatch", "scancel", "scontrol", "sinfo")
PLUGIN_DEFAULTS = {"poll_min": 1.0, "poll_max": 30.0, "max_queries_per_minute": 20}
REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "plugins" / "slurm" / "tests" / "slurm_cluster.py"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_helper() -> ModuleType:
    """The tests' cluster helper, by path (the tests folder is not a package)."""
    if "slurm_cluster" in sys.modules:
        return sys.modules["slurm_cluster"]
    spec = importlib.util.spec_from_file_location("slurm_cluster", HELPER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["slurm_cluster"] = module
    spec.loader.exec_module(module)
    return module


def real_binaries(search: str) -> dict[str, str]:
    """Absolute paths of the Slurm clients (found before any wrapper is put on PATH)."""
    found = {name: shutil.which(name, path=search) for name in (*COMMANDS, "sacctmgr")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SystemExit(f"Slurm clients not found: {', '.join(missing)}")
    return {name: str(path) for name, path in found.items()}


def jobfleet_command() -> str:
    beside = Path(sys.executable).with_name("jobfleet")
    found = str(beside) if beside.exists() else shutil.which("jobfleet")
    if not found:
        raise SystemExit("no `jobfleet` command beside this Python or on PATH")
    return found


def machine_cpu() -> float:
    """CPU seconds all cores have been busy (not idle, not waiting for I/O), from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:8]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """CPU seconds spent during one run, by whom (what can be told apart from outside)."""

    machine: float = 0.0  # every core, everything (the other work on a shared machine too)
    capacity: float = 0.0  # wall x cores
    jobs: float | None = None  # the jobs' cgroups: the batch scripts, wrappers and tasks
    daemons: dict[str, float] = field(default_factory=dict)
    submitter: float = 0.0  # the jobfleet CLI (or this script) and the Slurm commands it ran

    @property
    def rest(self) -> float:
        """slurmstepd (outside the job cgroups), the kernel, other processes on the machine."""
        known = (self.jobs or 0.0) + sum(self.daemons.values()) + self.submitter
        return self.machine - known

    def to_dict(self, tasks: int) -> dict[str, Any]:
        def per_task(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds / tasks * 1000, 1)

        return {
            "machine_seconds": round(self.machine, 2),
            "cores_busy": round(self.machine / self.capacity, 3) if self.capacity else None,
            "ms_per_task": {
                "jobs": per_task(self.jobs),
                "slurm_daemons": per_task(sum(self.daemons.values())),
                "submitter": per_task(self.submitter),
                "rest": per_task(self.rest),
                "machine": per_task(self.machine),
            },
            "daemons_seconds": {name: round(value, 2) for name, value in self.daemons.items()},
        }

    def text(self, tasks: int, submitter: str) -> str:
        def ms(seconds: float) -> str:
            return f"{seconds / tasks * 1000:.0f}"

        jobs = "?" if self.jobs is None else ms(self.jobs)
        busy = self.machine / self.capacity if self.capacity else 0.0
        return (
            f"CPU per task: {ms(self.machine)} ms on the machine (cores {busy:.0%} busy) = jobs "
            f"{jobs} + Slurm daemons {ms(sum(self.daemons.values()))} + {submitter} "
            f"{ms(self.submitter)} + rest {ms(self.rest)} (slurmstepd, kernel, other work)"
        )


class CpuMeter:
    """Measures a `CpuUse` between `start()` and `stop(wall)`."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.usage = Path(f"/sys/fs/cgroup/cpuacct/slurm_{cluster.node_name}/cpuacct.usage")

    def _read(self) -> tuple[float, float | None, dict[str, float], float]:
        try:
            jobs: float | None = int(self.usage.read_text()) / 1e9
        except (OSError, ValueError):
            jobs = None  # not cgroup v1: the jobs' CPU is not told apart
        daemons = {name: process_cpu(pid) for name, (pid, _) in self.cluster.pids.items()}
        return machine_cpu(), jobs, daemons, children_cpu()

    def start(self) -> None:
        self.before = self._read()

    def stop(self, wall: float) -> CpuUse:
        (machine0, jobs0, daemons0, sub0), (machine1, jobs1, daemons1, sub1) = (
            self.before,
            self._read(),
        )
        return CpuUse(
            machine=machine1 - machine0,
            capacity=wall * (os.cpu_count() or 1),
            jobs=None if jobs0 is None or jobs1 is None else jobs1 - jobs0,
            daemons={name: daemons1[name] - daemons0.get(name, 0.0) for name in daemons1},
            submitter=sub1 - sub0,
        )


# --- sacct's view of an array ------------------------------------------------------------------


@dataclass
class SlurmSpan:
    """What sacct recorded for the array tasks of one run (times in whole seconds)."""

    tasks: int = 0
    states: dict[str, int] = field(default_factory=dict)
    first_submit: float = 0.0
    first_start: float = 0.0
    last_end: float = 0.0
    mean_total_cpu: float = 0.0  # seconds of CPU per array task (user + system)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "states": self.states,
            "running_seconds": self.last_end - self.first_start,
            "mean_total_cpu_ms": round(self.mean_total_cpu * 1000, 1),
        }


def _epoch(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _cpu_seconds(text: str) -> float:
    """sacct's [DD-[HH:]]MM:SS[.mmm] as seconds."""
    if not text:
        return 0.0
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds + (int(days) * 86400 if days else 0)


def slurm_span(
    binaries: dict[str, str], env: dict[str, str], jobs: list[str], tasks: int, since: float
) -> SlurmSpan:
    """sacct's records of the array tasks of `jobs`, asked after the run until all `tasks`
    have their end (accounting lags a little behind the jobs)."""
    span = SlurmSpan()
    argv = [
        binaries["sacct"], "-n", "-P", f"--jobs={','.join(jobs)}",
        f"--starttime={time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(since - 60))}",
        "--format=JobID,Submit,Start,End,State,TotalCPU",
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
        # "123_4" is the array task, "123_4.batch" its batch step (which carries the CPU).
        tasks_rows = [row for row in rows if "." not in row[0] and "[" not in row[0]]
        steps = [row for row in rows if row[0].endswith(".batch")]
        ends = [_epoch(row[3]) for row in tasks_rows]
        complete = len(tasks_rows) == tasks and len(steps) == tasks
        if (complete and all(end is not None for end in ends)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    submits = [_epoch(row[1]) for row in tasks_rows]
    starts = [_epoch(row[2]) for row in tasks_rows]
    span.tasks = len(tasks_rows)
    for row in tasks_rows:
        state = row[4].split()[0] if row[4] else "?"
        span.states[state] = span.states.get(state, 0) + 1
    span.first_submit = min((s for s in submits if s is not None), default=0.0)
    span.first_start = min((s for s in starts if s is not None), default=0.0)
    span.last_end = max((e for e in ends if e is not None), default=0.0)
    cpu = [_cpu_seconds(row[5]) for row in steps]
    span.mean_total_cpu = sum(cpu) / len(cpu) if cpu else 0.0
    return span


# --- the baseline: raw sbatch --array --------------------------------------------------------


@dataclass
class Baseline:
    tasks: int
    export: bool = False  # with jobfleet's `--export=ALL,JOBFLEET_ARRAY_OFFSET=…`
    wall: float = 0.0
    started: float = 0.0  # epoch
    jobs: list[str] = field(default_factory=list)
    squeue_polls: int = 0
    cpu: CpuUse = field(default_factory=CpuUse)
    span: SlurmSpan = field(default_factory=SlurmSpan)


def run_baseline(
    tasks: int,
    binaries: dict[str, str],
    env: dict[str, str],
    work: Path,
    meter: CpuMeter,
    export: bool = False,
) -> Baseline:
    """One `sbatch --array` per 1000 tasks of `true`, then squeue until they have all left;
    with `export`, each sbatch also gets the `--export` the Slurm distributor passes (a list
    of variables, so sbatch sets SLURM_GET_USER_ENV=1: slurmd loads the user's login
    environment with `su - USER` before each job)."""
    work.mkdir(parents=True)
    script = work / "task.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o755)
    result = Baseline(tasks, export)
    meter.start()
    result.started = time.time()
    start = time.perf_counter()
    for first in range(0, tasks, CHUNK):
        size = min(CHUNK, tasks - first)
        options = [f"--export=ALL,{OFFSET_VARIABLE}={first}"] if export else []
        done = subprocess.run(
            [binaries["sbatch"], "--parsable", f"--array=0-{size - 1}", "--job-name=bench-raw",
             f"--output={work / 'slurm-%A_%a.out'}", *options, str(script)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result.jobs.append(done.stdout.strip().split(";", 1)[0])
    while True:
        done = subprocess.run(
            [binaries["squeue"], "-h", "-j", ",".join(result.jobs)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        result.squeue_polls += 1
        if done.returncode == 0 and not done.stdout.strip():
            break
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            raise SystemExit(f"squeue failed ({done.returncode}): {done.stderr.strip()}")
        if done.returncode != 0:
            break  # purged already: gone
        time.sleep(BASELINE_POLL)
    result.wall = time.perf_counter() - start
    result.cpu = meter.stop(result.wall)
    result.span = slurm_span(binaries, env, result.jobs, tasks, result.started)
    if result.span.states != {"COMPLETED": tasks}:
        raise SystemExit(f"baseline: sacct says {result.span.states}, not {tasks} COMPLETED")
    return result


# --- jobfleet run ------------------------------------------------------------------------------


@dataclass
class JobfleetRun:
    tasks: int
    label: str
    settings: dict[str, Any]
    plain_export: bool = False
    pack: str | None = None  # jobfleet run --pack
    wall: float = 0.0
    started: float = 0.0  # epoch
    cpu: CpuUse = field(default_factory=CpuUse)
    calls: dict[str, list[float]] = field(default_factory=dict)  # command -> epoch of each call
    jobs: list[str] = field(default_factory=list)
    span: SlurmSpan = field(default_factory=SlurmSpan)


def write_wrappers(
    directory: Path, binaries: dict[str, str], log: Path, plain_export: bool = False
) -> None:
    """One script per Slurm command: log its name and the time, then become the real one.

    With `plain_export` (a what-if, not what jobfleet does), sbatch gets `--export=ALL` in
    place of `--export=ALL,JOBFLEET_ARRAY_OFFSET=0`: the same job environment for an array
    that starts at step 0 (the worker node reads a missing offset as 0), without the variable
    list that makes sbatch ask for the user's login environment.
    """
    directory.mkdir(parents=True)
    for name in COMMANDS:
        path = directory / name
        log_line = f"printf '%s %s\\n' {name} \"$EPOCHREALTIME\" >> {shlex.quote(str(log))}\n"
        real = shlex.quote(binaries[name])
        if plain_export and name == "sbatch":
            body = (
                "args=()\n"
                'for arg in "$@"; do\n'
                f'  if [ "$arg" = "--export=ALL,{OFFSET_VARIABLE}=0" ]; then arg=--export=ALL; fi\n'
                '  args+=("$arg")\n'
                "done\n"
                f'exec {real} "${{args[@]}}"\n'
            )
        else:
            body = f'exec {real} "$@"\n'
        path.write_text(f"#!/bin/bash\n{log_line}{body}")
        path.chmod(0o755)


def read_calls(log: Path) -> dict[str, list[float]]:
    calls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    if log.exists():
        for line in log.read_text().splitlines():
            name, _, stamp = line.partition(" ")
            calls.setdefault(name, []).append(float(stamp.replace(",", ".")))
    return {name: sorted(stamps) for name, stamps in calls.items()}


def jobfleet_env(
    cluster_env: dict[str, str], wrappers: Path, cache: Path, settings: dict[str, Any]
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("JOBFLEET_SLURM_") and key != "JOBFLEET_LEDGER"
    }
    env.update(cluster_env)
    env["PATH"] = f"{wrappers}{os.pathsep}{cluster_env['PATH']}"
    # Bytecode as an installed jobfleet has it; the jobs inherit this (sbatch --export=ALL).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    for name, value in settings.items():
        env[f"JOBFLEET_SLURM_{name.upper()}"] = str(value)
    return env


def run_jobfleet(
    tasks: int,
    label: str,
    settings: dict[str, Any],
    plain_export: bool,
    binaries: dict[str, str],
    cluster_env: dict[str, str],
    cache: Path,
    work: Path,
    meter: CpuMeter,
    pack: str | None = None,
) -> JobfleetRun:
    """`jobfleet run --cluster slurm --json tasks.txt` in `work`, every task `true` (with
    `--pack` when `pack` is given)."""
    work.mkdir(parents=True)
    log = work / "calls.log"
    write_wrappers(work / "bin", binaries, log, plain_export)
    task_file = work / "tasks.txt"
    task_file.write_text("true\n" * tasks)
    env = jobfleet_env(cluster_env, work / "bin", cache, settings)
    argv = [jobfleet_command(), "run", "--cluster", "slurm", "--json", str(task_file)]
    if pack:
        argv += ["--pack", pack]
    result = JobfleetRun(tasks, label, {**PLUGIN_DEFAULTS, **settings}, plain_export, pack)
    meter.start()
    result.started = time.time()
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, check=False)
    result.wall = time.perf_counter() - start
    result.cpu = meter.stop(result.wall)
    if done.returncode != 0:
        raise SystemExit(f"jobfleet run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    if summary["status"] != "done" or summary["task_counts"] != {"done": tasks}:
        raise SystemExit(f"jobfleet run: {summary['status']}, tasks {summary['task_counts']}")
    result.calls = read_calls(log)
    with sqlite3.connect(work / ".jobfleet" / "ledger.db") as database:
        rows = database.execute("SELECT DISTINCT distributor_id FROM task_instances").fetchall()
    result.jobs = sorted({str(row[0]).split("_", 1)[0] for row in rows if row[0]})
    # Packed, a member's id is "<job>_<element>+<array>.<batch>.<step>": Slurm ran elements.
    elements = len({str(row[0]).split("+", 1)[0] for row in rows if row[0]})
    result.span = slurm_span(binaries, cluster_env, result.jobs, elements, result.started)
    return result


def squeue_stats(run: JobfleetRun) -> dict[str, Any]:
    stamps = run.calls.get("squeue", [])
    end = run.started + run.wall
    most = 0
    for index, stamp in enumerate(stamps):  # any window [t, t + 1 s) starting at a call
        most = max(most, bisect.bisect_left(stamps, stamp + 1.0) - index)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # The plugin's hard limit (max_queries_per_minute) counts squeue and sacct together.
    queries = sorted([*stamps, *run.calls.get("sacct", [])])
    most_queries = max(
        (bisect.bisect_left(queries, stamp + 60.0) - index for index, stamp in enumerate(queries)),
        default=0,
    )
    return {
        "calls": len(stamps),
        "per_minute": round(len(stamps) / (run.wall / 60), 1) if run.wall else 0.0,
        "max_in_1s": most,
        "min_gap_s": round(min(gaps), 3) if gaps else None,
        "median_gap_s": round(sorted(gaps)[len(gaps) // 2], 3) if gaps else None,
        # Each gap under 1 s, and how long before the run's end the second call came: at the
        # end the distributor's stop() asks squeue once more (and again after a scancel).
        "squeue_and_sacct_max_in_60s": most_queries,
        "gaps_under_1s": [
            {"gap_s": round(gap, 4), "before_end_s": round(end - later, 2)}
            for gap, later in zip(gaps, stamps[1:], strict=True)
            if gap < 1.0
        ],
    }


# --- report ------------------------------------------------------------------------------------


def phases(started: float, wall: float, submitted: float, span: SlurmSpan) -> dict[str, float]:
    """Seconds of: start to the first sbatch, sbatch to the first task's start, Slurm running
    the tasks (first start to last end), and the last end to done (sacct: whole seconds)."""
    ended = started + wall
    return {
        "to_sbatch": round(submitted - started, 2),
        # sacct's start is in whole seconds (truncated): never before the sbatch.
        "sbatch_to_first_start": round(max(0.0, span.first_start - submitted), 1),
        "running": round(span.last_end - span.first_start, 1),
        "tail": round(ended - span.last_end, 1),
    }


def phases_text(values: dict[str, float]) -> str:
    return (
        f"to sbatch {values['to_sbatch']:.2f} s | sbatch→first start "
        f"{values['sbatch_to_first_start']:.0f} s | running {values['running']:.0f} s | "
        f"last end→done {values['tail']:.0f} s"
    )


def jobfleet_report(
    run: JobfleetRun, baseline: Baseline, exported: Baseline | None
) -> tuple[list[str], dict[str, Any]]:
    ratio = run.wall / baseline.wall
    target = PACKED_TARGET_RATIO if run.pack else TARGET_RATIO
    counts = {name: len(run.calls.get(name, [])) for name in COMMANDS}
    counts.update({n: len(s) for n, s in run.calls.items() if n not in counts})
    squeue = squeue_stats(run)
    submitted = run.calls["sbatch"][0] if run.calls.get("sbatch") else run.started
    steps = phases(run.started, run.wall, submitted, run.span)
    settings = run.settings
    arrays = -(-run.tasks // CHUNK)
    data = {
        "label": run.label,
        "pack": run.pack,
        "sbatch_export": "ALL" if run.plain_export else f"ALL,{OFFSET_VARIABLE}=0",
        "settings": settings,
        "wall_seconds": round(run.wall, 2),
        "ratio": round(ratio, 3),
        "target": target,
        "target_met": ratio <= target,
        "calls": counts,
        "squeue": squeue,
        "sbatch_calls": counts["sbatch"],
        "arrays_expected": arrays,
        "phases": steps,
        "slurm": run.span.to_dict(),
        "cpu": run.cpu.to_dict(run.tasks),
        "array_jobs": run.jobs,
    }
    setting_text = ", ".join(f"{k} {v:g}" for k, v in settings.items())
    lines = [
        f"jobfleet run ({run.label}: {setting_text}): {run.wall:6.1f} s "
        f"({run.tasks / run.wall:.1f} tasks/s); ratio jobfleet/baseline {ratio:.2f} "
        f"(target <= {target}: {'met' if ratio <= target else 'not met'})",
        f"    {phases_text(steps)}; sacct: "
        + ", ".join(f"{state} {n}" for state, n in sorted(run.span.states.items())),
        f"    {run.cpu.text(run.tasks, 'jobfleet CLI')}; sacct's TotalCPU of "
        f"{'an element' if run.pack else 'a task'} "
        f"{run.span.mean_total_cpu * 1000:.0f} ms (baseline "
        f"{baseline.span.mean_total_cpu * 1000:.0f} ms)",
        "    Slurm calls: " + ", ".join(f"{name} {count}" for name, count in counts.items()),
        f"    squeue: {squeue['calls']} calls in {run.wall:.0f} s = {squeue['per_minute']}/min, "
        f"most in any 1 s: {squeue['max_in_1s']}, shortest gap {squeue['min_gap_s']} s, "
        f"median gap {squeue['median_gap_s']} s; sbatch {counts['sbatch']} for {run.tasks} "
        f"tasks ({arrays} array(s) expected)",
        "    squeue gaps under 1 s: "
        + (
            ", ".join(
                f"{gap['gap_s']:.4f} s ({gap['before_end_s']} s before the end)"
                for gap in squeue["gaps_under_1s"]
            )
            or "none"
        )
        + f"; most squeue + sacct calls in any 60 s: {squeue['squeue_and_sacct_max_in_60s']} "
        f"(max_queries_per_minute {settings['max_queries_per_minute']})",
    ]
    if exported is not None and not run.plain_export:
        gap = run.wall - baseline.wall
        login = exported.wall - baseline.wall
        data["gap_seconds"] = {
            "total": round(gap, 1),
            "export_login_environment": round(login, 1),
            "rest": round(gap - login, 1),
        }
        lines.append(
            f"    gap to the baseline {gap:.1f} s: the login environment --export brings "
            f"{login:.1f} s, the rest (wrapper, host) {gap - login:.1f} s"
        )
    return lines, data


def baseline_report(
    result: Baseline, reference: Baseline | None = None
) -> tuple[list[str], dict[str, Any]]:
    steps = phases(result.started, result.wall, result.started, result.span)
    data = {
        "export": f"ALL,{OFFSET_VARIABLE}=0" if result.export else None,
        "wall_seconds": round(result.wall, 2),
        "sbatch_calls": len(result.jobs),
        "squeue_polls": result.squeue_polls,
        "phases": steps,
        "slurm": result.span.to_dict(),
        "cpu": result.cpu.to_dict(result.tasks),
        "array_jobs": result.jobs,
    }
    if result.export:
        title = f"the same with jobfleet's --export=ALL,{OFFSET_VARIABLE}=N"
    else:
        title = "baseline: raw sbatch --array"
    extra = ""
    if reference is not None:
        data["ratio_to_baseline"] = round(result.wall / reference.wall, 3)
        extra = f"; ratio to the baseline {result.wall / reference.wall:.2f}"
    lines = [
        f"{title} of {result.tasks} x true: {result.wall:6.1f} s "
        f"({result.tasks / result.wall:.1f} tasks/s; {len(result.jobs)} sbatch, "
        f"{result.squeue_polls} squeue polls every {BASELINE_POLL} s{extra})",
        f"    {phases_text(steps)}",
        f"    {result.cpu.text(result.tasks, 'sbatch+squeue')}; sacct's TotalCPU of a task "
        f"{result.span.mean_total_cpu * 1000:.0f} ms",
    ]
    return lines, data


def summary_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Both ratios of the issue's target, side by side."""
    lines = []
    for data in runs[:2]:
        what = "with packing" if data["pack"] else "without packing"
        met = "met" if data["target_met"] else "not met"
        lines.append(f"ratio {what}: {data['ratio']:.2f} (target <= {data['target']}: {met})")
    return lines


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="tasks per run (1000)")
    parser.add_argument("--quick", action="store_true", help="100 tasks")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs the node advertises (8)")
    parser.add_argument("--poll-min", type=float, default=1.0, help="JOBFLEET_SLURM_POLL_MIN")
    parser.add_argument("--poll-max", type=float, default=2.0, help="JOBFLEET_SLURM_POLL_MAX")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="also run jobfleet with the plugin's default settings (poll 1 s to 30 s)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also run the baseline with the --export the Slurm distributor passes",
    )
    parser.add_argument(
        "--pack",
        default=DEFAULT_PACK,
        help=f"jobfleet run --pack of the packed run ({DEFAULT_PACK}); off leaves it out",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report instead")
    args = parser.parse_args()
    tasks = args.tasks or (100 if args.quick else 1000)
    if tasks < 1:
        parser.error("--tasks must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("a Slurm cluster needs root to run slurmd and slurmctld")
    helper = load_helper()
    missing = helper.missing_binaries()
    if missing:
        raise SystemExit(f"missing Slurm binaries: {', '.join(missing)}")

    for path in jobfleet.__path__:  # bytecode, as a wheel install leaves it
        compileall.compile_dir(path, quiet=1)
    binaries = real_binaries(helper.search_path())
    tuned = {"poll_min": args.poll_min, "poll_max": args.poll_max}
    pack = None if args.pack.strip().lower() in ("", "off", "none") else args.pack
    runs: list[tuple[str, dict[str, Any], bool, str | None]] = [("as shipped", tuned, False, None)]
    if pack:
        runs.append((f"packed, --pack {pack}", tuned, False, pack))
    if args.defaults:
        runs.append(("plugin defaults", {}, False, None))
    if args.explain and tasks <= CHUNK:  # one array: every chunk's offset is 0
        runs.append(("what if: sbatch --export=ALL", tuned, True, None))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tasks": tasks,
        "node_cpus": args.cpus,
    }

    def show(lines: list[str]) -> None:
        if not args.json:
            print("\n".join(lines), flush=True)

    root = Path(tempfile.mkdtemp(prefix="jobfleet-bench-slurm-"))
    root.chmod(0o711)  # munged insists that everyone may traverse its socket's directories
    cluster = helper.SlurmCluster(cpus=args.cpus)
    try:
        note(f"starting a single-node Slurm ({args.cpus} CPUs) under {root / 'cluster'} …")
        (root / "cluster").mkdir()
        cluster.start(root / "cluster")
        env = {**os.environ, **cluster.env}
        version = subprocess.run(
            [binaries["sbatch"], "--version"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        report["slurm"] = version
        report["cluster_start_seconds"] = round(cluster.start_seconds, 1)
        show([
            f"{version}, one node with {args.cpus} CPUs on {os.cpu_count()} cores; "
            f"cluster up in {cluster.start_seconds:.1f} s (not counted)",
        ])  # fmt: skip
        cache = root / "pycache"
        note("warm-up (untimed): the node's first jobs, bytecode of the CLI and the wrapper …")
        warm = time.perf_counter()
        meter = CpuMeter(cluster)
        run_baseline(WARM_UP_TASKS, binaries, env, root / "warm-baseline", meter)
        run_jobfleet(
            WARM_UP_TASKS, "warm-up", tuned, False, binaries, cluster.env, cache,
            root / "warm-jf", meter, pack,
        )  # fmt: skip
        report["warm_up_seconds"] = round(time.perf_counter() - warm, 1)

        note(f"baseline: sbatch --array of {tasks} x true …")
        baseline = run_baseline(tasks, binaries, env, root / "baseline", meter)
        lines, report["baseline"] = baseline_report(baseline)
        show(lines)
        exported = None
        if args.explain:
            note(f"baseline with jobfleet's --export=ALL,{OFFSET_VARIABLE}=N …")
            exported = run_baseline(
                tasks, binaries, env, root / "baseline-export", meter, export=True
            )
            lines, report["baseline_with_export"] = baseline_report(exported, baseline)
            show(lines)
        report["jobfleet"] = []
        for index, (label, settings, plain_export, packing) in enumerate(runs):
            note(f"jobfleet run --cluster slurm of {tasks} x true ({label}) …")
            result = run_jobfleet(
                tasks, label, settings, plain_export, binaries, cluster.env, cache,
                root / f"jobfleet-{index}", meter, packing,
            )  # fmt: skip
            lines, data = jobfleet_report(result, baseline, exported)
            report["jobfleet"].append(data)
            show(lines)
        show(summary_lines(report["jobfleet"]))
    finally:
        note("stopping the cluster …")
        cluster.stop(remove=False)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
