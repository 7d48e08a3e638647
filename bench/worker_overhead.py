"""What the worker-node wrapper costs per task, and how true its maxrss is.

    uv run python bench/worker_overhead.py [--tasks 100] [--sizes 50,300,1000]

Runs the same short command bare and under `jobfleet-worker-node` in the same run (the machine
is shared and noisy, so only the comparison means something) and prints per-task wall and CPU
overhead, their ratio to the bare run, and the wrapper's own peak RSS. Then runs tasks that
allocate and touch X MiB — one process, and a tree of three — and prints the reported maxrss
against X, with and without a cgroup. Targets: ≤ 60 ms wall per task, wrapper RSS ≤ 30 MB,
maxrss within 10% (or 5 MB) of the true peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobfleet.core.channel import EventKind, TaskSpec, open_channel

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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_bare(tasks: int) -> tuple[float, float]:
    cpu, start = children_cpu(), time.perf_counter()
    for _ in range(tasks):
        subprocess.run(["/bin/sh", "-c", "true"], check=True)
    return time.perf_counter() - start, children_cpu() - cpu


def run_wrapped(
    tasks: int, root: Path, extra: list[str], *, http: bool = False
) -> tuple[float, float, int]:
    """`tasks` wrapped runs of `true`; `http`: through the channel served over HTTP on
    loopback, as pods use it (the wrapper then also imports http.client and posts)."""
    wrapper = shutil.which("jobfleet-worker-node")
    assert wrapper, "run this with the workspace installed: uv run python bench/worker_overhead.py"
    channel = open_channel(f"file://{root / 'overhead'}", create=True)
    for n in range(tasks):
        channel.put_spec(TaskSpec(n, "true", f"bench-{n}"))
    env = {**os.environ, "JOBFLEET_DISTRIBUTOR_ID": "bench"}
    url, served = channel.url, None
    if http:
        from jobfleet.core.channel import FileChannel
        from jobfleet.core.host.channel_server import serve_channel

        assert isinstance(channel, FileChannel)
        served = serve_channel(channel, "bench")
        url, env["JOBFLEET_CHANNEL_TOKEN"] = served.url, served.token
    try:
        return _run_wrapped(tasks, wrapper, url, env, extra)
    finally:
        if served is not None:
            served.close()


def _run_wrapped(
    tasks: int, wrapper: str, url: str, env: dict[str, str], extra: list[str]
) -> tuple[float, float, int]:
    peak, cpu, start = 0, children_cpu(), time.perf_counter()
    for n in range(tasks):
        argv = [
            wrapper,
            "job",
            "--task-instance-id",
            str(n),
            "--cluster",
            "dummy",
            "--host-url",
            url,
            *extra,
        ]
        process = subprocess.Popen(argv, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        peak = max(peak, usage.ru_maxrss * 1024)
    return time.perf_counter() - start, children_cpu() - cpu, peak


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
        bare_wall, bare_cpu = run_bare(args.tasks)
        for label, extra, http in (
            ("with cgroup", ["--cgroup", "always"], False),
            ("no cgroup", ["--cgroup", "never"], False),
            ("http, no cg", ["--cgroup", "never"], True),
        ):
            directory = root / label.replace(" ", "-").replace(",", "")
            wall, cpu, peak = run_wrapped(args.tasks, directory, extra, http=http)
            per_wall = (wall - bare_wall) / args.tasks * 1000
            per_cpu = (cpu - bare_cpu) / args.tasks * 1000
            print(
                f"overhead {label:12} {args.tasks} x true: wall {per_wall:6.1f} ms/task "
                f"(ratio {wall / bare_wall:5.1f} vs bare), cpu {per_cpu:6.1f} ms/task, "
                f"wrapper peak RSS {peak / MIB:5.1f} MiB"
            )
        # The interpreters of the test processes hold memory too (~4 MiB each): measure the
        # same shape allocating nothing, and compare what the allocation added.
        modes = (("cgroup", ["--cgroup", "always"]), ("no cgroup", ["--cgroup", "never"]))
        baselines = {
            (tree, label): measure_maxrss(root, 0, tree, extra)[0]
            for tree in (False, True)
            for label, extra in modes
        }
        for size in (int(s) for s in args.sizes.split(",")):
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
