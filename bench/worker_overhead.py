"""What the worker-node wrapper costs per task, and how true its maxrss is.

    uv run python bench/worker_overhead.py [--tasks 100] [--sizes 50,300,1000]

Every process is started the same way, by one small launcher process (`python -S`, started
once), in interleaved rounds: `/bin/sh -c true` bare, `python -c pass` (the wrapper's own
interpreter, nothing imported), and `true` under `jobfleet-worker-node` through the file channel
with and without a task cgroup and through the http channel served on loopback. The machine is
shared and noisy, so each figure is the median per task and is printed as a ratio against the
baselines measured in the same rounds. Peak RSS is each process's ru_maxrss: the launcher is
small, so the fork floor (the parent's size, which a child's ru_maxrss starts from) is the
`python -c pass` row's, not the benchmark's.

Then, with `$JOBFLEET_WORKER_NODE_PHASES`, the wrapper's own timer (jobfleet.worker_node.phases)
splits a wrapped `true` into phases: interpreter start, imports, channel, plugin, spec read,
runner imports, preparing, fork/exec, running report and threads, wait, the end (kill, reap,
sampler), usage, the final report, exit. Last, tasks that allocate and touch X MiB — one
process, and a tree of three — print the reported maxrss against X, with and without a cgroup
(`--sizes ""` skips them).

Targets (issue 16): ≤ 40 ms wall and ≤ 30 ms CPU per `true` task without a cgroup, ≤ 50 ms
with one; wrapper peak RSS ≤ 20 MiB; maxrss within 10% (or 5 MB) of the true peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from jobfleet.core.channel import EventKind, FileChannel, TaskSpec, open_channel

MIB = 1024 * 1024

SINGLE = """
import time
size = {size} * 1024 * 1024
block = bytearray(size)
for i in range(0, size, 4096):
    block[i] = 1
time.sleep(0.3)
"""

TREE = """
import subprocess, sys
child = {single!r}
procs = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(3)]
for p in procs:
    p.wait()
"""

# Runs `rounds` rounds of every command (one after the other, in order), each as a child of
# this small process, and prints one JSON line per run: label, spawn time, wall, cpu, maxrss.
LAUNCHER = """
import json, os, sys, time
jobs = json.loads(sys.stdin.read())
out = []
for r in range(jobs["rounds"]):
    for label, argv, env in jobs["commands"]:
        argv = [a.replace("{n}", str(r)) for a in argv]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env)
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{label} failed: status {status}")
        out.append([label, start, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024])
print(json.dumps(out))
"""


def launch(commands: list[tuple[str, list[str], dict[str, str]]], rounds: int) -> list[list]:
    """Run the commands in interleaved rounds from the small launcher; its measurements."""
    jobs = json.dumps({"rounds": rounds, "commands": commands})
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER],
        input=jobs,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def wrapper_argv(url: str, extra: list[str], first: int) -> list[str]:
    wrapper = shutil.which("jobfleet-worker-node")
    assert wrapper, "run this with the workspace installed: uv run python bench/worker_overhead.py"
    # {n} is the round: task instance first + n.
    return [
        wrapper,
        "job",
        "--task-instance-id",
        f"{first}{{n}}",
        "--cluster",
        "dummy",
        "--host-url",
        url,
        *extra,
    ]


def overhead(root: Path, tasks: int) -> dict[str, list[list]]:
    """Per label, the runs of each command of the overhead table."""
    channel = open_channel(f"file://{root / 'overhead'}", create=True)
    assert isinstance(channel, FileChannel)
    rows = (
        ("file, cgroup", ["--cgroup", "always"], False, 1),
        ("file, no cgroup", ["--cgroup", "never"], False, 2),
        ("http, no cgroup", ["--cgroup", "never"], True, 3),
    )
    for *_, first in rows:
        for n in range(tasks):
            tid = int(f"{first}{n}")
            channel.put_spec(TaskSpec(tid, "true", f"bench-{tid}"))
    env = {**os.environ, "JOBFLEET_DISTRIBUTOR_ID": "bench"}
    env.pop("JOBFLEET_WORKER_NODE_PHASES", None)
    from jobfleet.core.host.channel_server import serve_channel

    served = serve_channel(channel, "bench")
    http_env = {**env, "JOBFLEET_CHANNEL_TOKEN": served.token}
    try:
        commands = [
            ("sh -c true", ["/bin/sh", "-c", "true"], env),
            ("python -c pass", [sys.executable, "-c", "pass"], env),
        ]
        for label, extra, http, first in rows:
            url = served.url if http else channel.url
            commands.append((label, wrapper_argv(url, extra, first), http_env if http else env))
        runs = launch(commands, tasks)
    finally:
        served.close()
    by_label: dict[str, list[list]] = {}
    for run in runs:
        by_label.setdefault(run[0], []).append(run)
    return by_label


def print_overhead(by_label: dict[str, list[list]], tasks: int) -> None:
    def med(label: str, column: int) -> float:
        return statistics.median(run[column] for run in by_label[label])

    sh_wall, py_wall, py_cpu = (
        med("sh -c true", 2),
        med("python -c pass", 2),
        med("python -c pass", 3),
    )
    print(f"medians of {tasks} runs each, interleaved; ratios against the same rounds' baselines")
    for label in by_label:
        wall, cpu = med(label, 2) * 1000, med(label, 3) * 1000
        rss = max(run[4] for run in by_label[label]) / MIB
        print(
            f"{label:16} wall {wall:6.1f} ms ({wall / 1000 / sh_wall:6.1f}x sh -c true, "
            f"{wall / 1000 / py_wall:4.2f}x python -c pass), cpu {cpu:6.1f} ms "
            f"({cpu / 1000 / py_cpu:4.2f}x python -c pass), peak RSS {rss:5.1f} MiB"
        )


def phases(root: Path, tasks: int) -> None:
    """The wrapper's own phase marks for `tasks` wrapped `true`s (file channel, no cgroup)."""
    channel = open_channel(f"file://{root / 'phases'}", create=True)
    for n in range(tasks):
        channel.put_spec(TaskSpec(int(f"9{n}"), "true", f"phase-{n}"))
    marks_file = root / "phases.jsonl"
    env = {
        **os.environ,
        "JOBFLEET_DISTRIBUTOR_ID": "bench",
        "JOBFLEET_WORKER_NODE_PHASES": str(marks_file),
    }
    runs = launch([("wrapped", wrapper_argv(channel.url, ["--cgroup", "never"], 9), env)], tasks)
    lines = [json.loads(line) for line in marks_file.read_text().splitlines()]
    assert len(lines) == len(runs)
    durations: dict[str, list[float]] = {}
    for (_, start, wall, _cpu, _rss), line in zip(runs, lines, strict=True):
        previous = start
        for name, at in line["marks"]:
            durations.setdefault(name, []).append(at - previous)
            previous = at
        durations.setdefault("exit", []).append(start + wall - previous)
    total = statistics.median(run[2] for run in runs) * 1000
    print(
        f"phases of a wrapped true (file channel, no cgroup), medians of {tasks} runs, "
        f"total {total:.1f} ms wall:"
    )
    for name, values in durations.items():
        print(f"  {name:26} {statistics.median(values) * 1000:6.1f} ms")


def measure_maxrss(root: Path, size: int, tree: bool, extra: list[str]) -> tuple[int, str]:
    """Run a task allocating `size` MiB (split over three processes for a tree)."""
    wrapper = shutil.which("jobfleet-worker-node")
    assert wrapper
    channel = open_channel(f"file://{root / f'rss-{size}-{tree}-{extra[-1]}'}", create=True)
    code = SINGLE.format(size=size // 3 if tree else size)
    if tree:
        code = TREE.format(single=code)
    script = root / f"alloc-{size}-{tree}.py"
    script.write_text(code)
    channel.put_spec(TaskSpec(1, f"{sys.executable} {script}", "alloc"))
    argv = [
        wrapper,
        "job",
        "--task-instance-id",
        "1",
        "--cluster",
        "dummy",
        "--host-url",
        channel.url,
        *extra,
    ]
    subprocess.run(argv, check=True)
    events, _ = channel.read_events()
    final = next(e.data for e in events if e.kind is EventKind.FINAL)
    return int(final["usage"]["maxrss"]), json.loads(final["usage"]["usage_str"])["maxrss_source"]


def compile_bytecode() -> None:
    """Write .pyc files for jobfleet, as installing a wheel does.

    Without them (PYTHONDONTWRITEBYTECODE is set on some machines) every wrapper start would
    compile its modules again and the benchmark would measure the compiler.
    """
    import compileall

    import jobfleet

    for path in jobfleet.__path__:
        compileall.compile_dir(path, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--sizes", default="50,300,1000", help="MiB to allocate, comma-separated")
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print_overhead(overhead(root, args.tasks), args.tasks)
        phases(root, args.tasks)
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        if not sizes:
            return
        # The interpreters of the test processes hold memory too (~4 MiB each): measure the
        # same shape allocating nothing, and compare what the allocation added.
        modes = (("cgroup", ["--cgroup", "always"]), ("no cgroup", ["--cgroup", "never"]))
        baselines = {
            (tree, label): measure_maxrss(root, 0, tree, extra)[0]
            for tree in (False, True)
            for label, extra in modes
        }
        for size in sizes:
            for tree in (False, True):
                for label, extra in modes:
                    reported, source = measure_maxrss(root, size, tree, extra)
                    added = reported - baselines[tree, label]
                    allocated = (size // 3 * 3 if tree else size) * MIB  # a tree splits it in three
                    error = (added - allocated) / allocated * 100
                    shape = "tree of 3" if tree else "1 process"
                    print(
                        f"maxrss {size:5} MiB {shape:9} {label:9}: "
                        f"reported {reported / MIB:7.1f} MiB, {added / MIB:7.1f} MiB over the "
                        f"empty baseline ({error:+5.1f}%, source {source})"
                    )


if __name__ == "__main__":
    main()
