"""The multiprocess backend against `xargs -P <cores>` running the same commands bare.

    uv run python bench/local.py [--tasks 1000] [--command true] [--memory-tasks 10000]

Both run N copies of the command with as many at once as the machine has cores. The backend's
side goes the whole way a host's would: a spec per instance written to a file channel, one
array submission, every instance through the worker node, and every final report read back;
once with slot workers (the default: long-lived workers, tasks forked by a small shell) and
once with one-shot wrappers (one `jobfleet-worker-node` process per task). Prints the wall
times, the ratios to xargs (target <= 3 with slot workers) and the overhead per task. Only the
ratios mean something: the runs share one noisy machine.

`--memory-tasks N` (0: skip; `--tasks 0` skips the comparison) then runs N tasks through slot
workers, in ten equal arrays, and prints the host's RSS and the largest worker's after each:
the workers' should stay flat; the host's grows by its file channel's event cursor (a byte
offset per events file, so per instance), while the distributor keeps 16 bytes of an ended one.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

import jobfleet
from jobfleet.core.channel import Channel, EventCursor, EventKind, TaskSpec, open_channel
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

MIB = 1024 * 1024


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


class Bench:
    """A host's side: one channel, one distributor, arrays of `command` run to their end."""

    def __init__(self, root: Path, cores: int, slot_workers: bool) -> None:
        self.channel: Channel = open_channel(f"file://{root / 'channel'}", create=True)
        settings = MultiprocessSettings(cores=cores, slot_workers=slot_workers)
        self.distributor = MultiprocessDistributor(
            "bench", host_url=self.channel.url, settings=settings
        )
        self.distributor.start()
        self.next_ti = 0
        self.next_array = 1
        self.cursor: EventCursor | None = None

    def run(self, tasks: int, command: str) -> float:
        start = time.perf_counter()
        first = self.next_ti
        for ti in range(first, first + tasks):
            self.channel.put_spec(TaskSpec(ti, command, f"bench-{ti}"))
        self.next_ti += tasks
        array = self.next_array
        self.next_array += 1
        self.channel.put_array(array, 0, {step: first + step for step in range(tasks)})
        argv = self.distributor.build_worker_node_command(array_id=array, batch_number=0)
        self.distributor.submit_array_to_batch_distributor(argv, "bench", {"cores": 1}, tasks)
        finals, states = 0, {}
        while finals < tasks:
            events, self.cursor = self.channel.read_events(self.cursor)
            ended = []
            for event in events:
                if event.kind is EventKind.FINAL:
                    finals += 1
                    state = event.data["error_state"]
                    states[state] = states.get(state, 0) + 1
                    ended.append(event.task_instance_id)
            # As the host does once the final reports are in its ledger: the channel and the
            # cursor keep only the live instances.
            self.channel.forget_events(ended)
            if finals < tasks:
                time.sleep(0.05)  # polling the channel, as a host does between rounds
        elapsed = time.perf_counter() - start
        assert states == {"D": tasks}, states
        return elapsed

    def worker_rss(self) -> list[int]:
        pids = [worker.pid for worker in self.distributor._workers]
        sizes = []
        for pid in pids:
            try:
                sizes.append(psutil.Process(pid).memory_info().rss)
            except psutil.Error:
                continue
        return sizes

    def stop(self) -> None:
        self.distributor.stop()


def one_run(tasks: int, command: str, cores: int, slot_workers: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), cores, slot_workers)
        try:
            return bench.run(tasks, command)
        finally:
            bench.stop()


def memory_check(tasks: int, command: str, cores: int) -> None:
    """Ten arrays of tasks / 10 each (equal sizes: a worker parses its array's step map, so a
    bigger array raises its high-water mark once, which is not growth); RSS after each."""
    host = psutil.Process(os.getpid())
    batch = max(1, tasks // 10)
    hosts: list[int] = []
    workers: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), cores, slot_workers=True)
        try:
            for _ in range(10):
                bench.run(batch, command)
                hosts.append(host.memory_info().rss)
                workers.append(max(bench.worker_rss(), default=0))
        finally:
            bench.stop()
    print(f"memory over {10 * batch} tasks (slot workers), after each {batch}:")
    print(
        f"  host RSS       {_mib(hosts)} MiB "
        f"({(hosts[-1] / hosts[0] - 1) * 100:+.1f}% from the first)"
    )
    print(
        f"  largest worker {_mib(workers)} MiB "
        f"({(workers[-1] / workers[0] - 1) * 100:+.1f}% from the first)"
    )


def _mib(sizes: list[int]) -> str:
    return "[" + ", ".join(f"{size / MIB:.1f}" for size in sizes) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--command", default="true")
    parser.add_argument("--memory-tasks", type=int, default=0)
    args = parser.parse_args()
    for path in jobfleet.__path__:  # bytecode, as a wheel install leaves it
        compileall.compile_dir(path, quiet=1)
    cores = psutil.cpu_count() or 1
    if args.tasks:
        compare(args.tasks, args.command, cores)
    if args.memory_tasks:
        memory_check(args.memory_tasks, args.command, cores)


def compare(tasks: int, command: str, cores: int) -> None:
    bare = run_xargs(tasks, command, cores)
    slots = one_run(tasks, command, cores, slot_workers=True)
    one_shot = one_run(tasks, command, cores, slot_workers=False)
    for label, elapsed in (("slot workers", slots), ("one-shot wrappers", one_shot)):
        overhead = (elapsed - bare) / tasks * cores * 1000
        print(
            f"{tasks} x {command!r} on {cores} cores: xargs -P{cores} {bare:.2f} s, "
            f"multiprocess ({label}) {elapsed:.2f} s, ratio {elapsed / bare:.1f} "
            f"(target <= 3), overhead {overhead:.1f} ms per task per core"
        )


if __name__ == "__main__":
    main()
