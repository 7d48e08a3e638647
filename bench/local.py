"""The multiprocess backend against `xargs -P <cores>` running the same commands bare.

    uv run python bench/local.py [--tasks 1000] [--command true]

Both run N copies of the command with as many at once as the machine has cores. The backend's
side goes the whole way a host's would: a spec per instance written to a file channel, one
array submission, every instance through `jobfleet-worker-node`, and every final report read
back. Prints both wall times, their ratio (target ≤ 2.5) and the overhead per task. Only the
ratio means something: the two runs share one noisy machine.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

import jobfleet
from jobfleet.core.channel import EventKind, TaskSpec, open_channel
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings


def run_xargs(tasks: int, command: str, cores: int) -> float:
    lines = "".join(f"{n}\n" for n in range(tasks)).encode()
    start = time.perf_counter()
    subprocess.run(
        [
            shutil.which("xargs") or "/usr/bin/xargs",
            "-P",
            str(cores),
            "-n",
            "1",
            "/bin/sh",
            "-c",
            command,
            "_",
        ],
        input=lines,
        check=True,
    )
    return time.perf_counter() - start


def run_multiprocess(tasks: int, command: str, cores: int, root: Path) -> float:
    channel = open_channel(f"file://{root / 'channel'}", create=True)
    distributor = MultiprocessDistributor(
        "bench", host_url=channel.url, settings=MultiprocessSettings(cores=cores)
    )
    start = time.perf_counter()
    distributor.start()
    for ti in range(tasks):
        channel.put_spec(TaskSpec(ti, command, f"bench-{ti}"))
    channel.put_array(1, 0, {step: step for step in range(tasks)})
    argv = distributor.build_worker_node_command(array_id=1, batch_number=0)
    distributor.submit_array_to_batch_distributor(argv, "bench", {"cores": 1}, tasks)
    finals, cursor, states = 0, None, {}
    while finals < tasks:
        events, cursor = channel.read_events(cursor)
        for event in events:
            if event.kind is EventKind.FINAL:
                finals += 1
                states[event.data["error_state"]] = states.get(event.data["error_state"], 0) + 1
        if finals < tasks:
            time.sleep(0.05)  # polling the channel, as a host does between rounds
    elapsed = time.perf_counter() - start
    distributor.stop()
    assert states == {"D": tasks}, states
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--command", default="true")
    args = parser.parse_args()
    for path in jobfleet.__path__:  # bytecode, as a wheel install leaves it
        compileall.compile_dir(path, quiet=1)
    cores = psutil.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        bare = run_xargs(args.tasks, args.command, cores)
        ours = run_multiprocess(args.tasks, args.command, cores, Path(tmp))
    overhead = (ours - bare) / args.tasks * cores * 1000
    print(
        f"{args.tasks} x {args.command!r} on {cores} cores: xargs -P{cores} {bare:.2f} s, "
        f"multiprocess {ours:.2f} s, ratio {ours / bare:.1f} (target <= 2.5), "
        f"overhead {overhead:.0f} ms per task per core"
    )


if __name__ == "__main__":
    main()
