"""How many task instances per second a host can dispatch through the core and the dummy backend.

    uv run python bench/dispatch.py [--tasks 10000] [--array-size 1000] [--no-arrays] [--dir DIR]

The reference host (ledger, service) does not exist yet, so this runs in process what a host
does per task instance with the core's pieces:

1. coerce: `validate_resources(strict=False, **r)` then `coerce_resources(**r)` against a
   `DummyQueue` with limits and defaults, for a mix of request shapes (several of which coerce
   to the same resources, so that grouping has work to do);
2. specs: one `TaskSpec` (`echo task N`) per instance;
3. store+submit: instances with identical coerced resources grouped into arrays of at most
   `--array-size`, each batch's specs stored together with `put_array_specs` in a real
   file channel (`open_channel("file://<tmpdir>", create=True)`: one file per batch) and
   submitted with one `submit_array_to_batch_distributor`; a backend raising
   `NotImplementedError` gets a spec file (`put_spec`) and a `submit_to_batch_distributor`
   call per instance instead;
4. status: one bulk `get_submitted_or_running` over all ids, and `get_remote_exit_info` for a
   sample.

It prints tasks per second for the whole path and for each phase, and, as the baseline measured
in the same run, the dummy distributor's own `submit_array_to_batch_distributor` (and
`submit_to_batch_distributor`) alone for the same number of instances: the plugin call without
the core's work. The full path runs twice: with arrays, and with single submissions (the
fallback path, through a dummy distributor that keeps the protocol's default array method,
which raises `NotImplementedError`); `--no-arrays` runs only the second. Target: at least
2,000 tasks per second for the full path (Jobmon's own dispatch path runs at about 13 per
second). Nothing here is asserted by a test; the machine is shared and noisy, so the ratios
mean more than the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobfleet.core.channel import Channel, TaskSpec, open_channel
from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.resources import parse_cores, parse_memory, parse_runtime
from jobfleet.plugins.dummy.distributor import DummyDistributor
from jobfleet.plugins.dummy.queue import DummyQueue

TARGET = 2000.0  # tasks per second, full path

QUEUE_PARAMETERS: dict[str, Any] = {
    "max_cores": 8,
    "max_memory": "32G",
    "max_runtime": "1d",
    "default_cores": 1,
    "default_memory": "1G",
    "default_runtime": "1h",
}

# Request shapes, used in turn. Several coerce to the same resources: the first four all become
# {cores 1, memory 1G, runtime 3600}; the clamped one becomes the queue maxima.
REQUESTS: tuple[dict[str, Any], ...] = (
    {"cores": 1, "memory": "1G", "runtime": "1h"},
    {"cores": 1, "memory": "1024M", "runtime": "60m"},
    {"cores": "1", "memory": "1GiB", "runtime": 3600},
    {"memory": "1G"},  # cores and runtime filled from the queue defaults
    {"cores": 2, "memory": "4G", "runtime": "2h"},
    {"cores": 4, "memory": "8G", "runtime": "1:30:00"},
    {"cores": 64, "memory": "256G", "runtime": "3d"},  # clamped to the queue maxima
    {"cores": 0.5, "memory": "512M", "runtime": "15m"},
)

STATUS_SAMPLE = 100  # instances asked about with get_remote_exit_info


class SinglesOnlyDistributor(DummyDistributor):
    """The dummy backend without arrays: keeps the protocol's default, which raises."""

    submit_array_to_batch_distributor = ClusterDistributor.submit_array_to_batch_distributor


@dataclass
class Result:
    tasks: int
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    groups: int = 0
    arrays: int = 0
    singles: int = 0

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def group_key(coerced: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Identical coerced resources give identical keys (every value here is hashable)."""
    return tuple(sorted(coerced.items()))


def spec_limits(coerced: Mapping[str, Any]) -> tuple[int | None, int | None, float | None]:
    """(memory bytes, runtime seconds, cores) of a canonical dict, for the task spec."""
    memory, runtime, cores = coerced.get("memory"), coerced.get("runtime"), coerced.get("cores")
    return (
        None if memory is None else parse_memory(memory),
        None if runtime is None else parse_runtime(runtime),
        None if cores is None else parse_cores(cores),
    )


def dispatch(
    tasks: int,
    channel: Channel,
    queue: DummyQueue,
    distributor: DummyDistributor,
    array_size: int,
) -> Result:
    """The host's submission path for `tasks` new instances, timed phase by phase."""
    result = Result(tasks)
    clock = time.perf_counter

    # 1. validate and coerce every request against the queue.
    start = clock()
    coerced_of: list[dict[str, Any]] = []
    limits_of_group: dict[tuple[tuple[str, Any], ...], tuple[Any, ...]] = {}
    keys: list[tuple[tuple[str, Any], ...]] = []
    for tid in range(tasks):
        request = REQUESTS[tid % len(REQUESTS)]
        ok, message = queue.validate_resources(strict=False, **request)
        if not ok:
            raise SystemExit(f"request {request} refused: {message}")
        coerced = queue.coerce_resources(**request)
        key = group_key(coerced)
        if key not in limits_of_group:  # canonical units for the spec, once per resource set
            limits_of_group[key] = spec_limits(coerced)
        coerced_of.append(coerced)
        keys.append(key)
    result.phases["coerce"] = clock() - start

    # 2. one spec per instance (stored with its submission, below).
    start = clock()
    specs: list[TaskSpec] = []
    for tid in range(tasks):
        memory, runtime, cores = limits_of_group[keys[tid]]
        specs.append(
            TaskSpec(
                task_instance_id=tid,
                command=f"echo task {tid}",
                name=f"bench-task-{tid}",
                run_id=1,
                memory=memory,
                runtime=runtime,
                cores=cores,
            )
        )
    result.phases["specs"] = clock() - start

    # 3. group identical resources into arrays, store each batch's specs together (one file in
    # the file channel) and submit it; single spec files and submissions when the backend has
    # no arrays.
    start = clock()
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    for tid, key in enumerate(keys):
        groups.setdefault(key, []).append(tid)
    result.groups = len(groups)
    distributor_ids: dict[int, str] = {}
    arrays_supported = True
    array_id = 0
    for members in groups.values():
        resources = coerced_of[members[0]]
        for first in range(0, len(members), array_size):
            chunk = members[first : first + array_size]
            if arrays_supported:
                array_id += 1
                channel.put_array_specs(
                    array_id, 0, {step: specs[tid] for step, tid in enumerate(chunk)}
                )
                try:
                    steps = distributor.submit_array_to_batch_distributor(
                        command=distributor.build_worker_node_command(
                            array_id=array_id, batch_number=0
                        ),
                        name=f"bench-array-{array_id}",
                        requested_resources=resources,
                        array_length=len(chunk),
                    )
                except NotImplementedError:
                    # Remembered: one failed attempt per host run, not one per array.
                    arrays_supported = False
                    channel.remove_array(array_id, 0)
                else:
                    result.arrays += 1
                    for step, tid in enumerate(chunk):
                        distributor_ids[tid] = steps[step]
                    continue
            for tid in chunk:
                channel.put_spec(specs[tid])
                distributor_ids[tid] = distributor.submit_to_batch_distributor(
                    command=distributor.build_worker_node_command(task_instance_id=tid),
                    name=f"bench-task-{tid}",
                    requested_resources=resources,
                )
                result.singles += 1
    result.phases["store+submit"] = clock() - start

    # 4. one bulk status query, and exit info for a sample.
    start = clock()
    ids = list(distributor_ids.values())
    still_active = distributor.get_submitted_or_running(ids)
    sample = ids[:: max(1, len(ids) // STATUS_SAMPLE)]
    states = {distributor.get_remote_exit_info(did).error_state for did in sample}
    result.phases["status"] = clock() - start

    # Checks, outside the timing: every instance submitted once, reported done, resolvable.
    if len(distributor_ids) != tasks or len(set(ids)) != tasks:
        raise SystemExit(f"{len(set(ids))} distinct ids for {tasks} instances")
    if still_active or {str(state) for state in states} != {"D"}:
        raise SystemExit(f"dummy backend: {len(still_active)} still active, states {states}")
    if result.arrays:
        spec = channel.get_array_step(result.arrays, 0, 0)
        if spec.command != f"echo task {spec.task_instance_id}":
            raise SystemExit(f"array {result.arrays} step 0 does not resolve to its spec")
    return result


def plugin_alone(tasks: int, array_size: int, arrays: bool) -> float:
    """Seconds the dummy distributor alone takes to submit `tasks` instances."""
    distributor = DummyDistributor("dummy")
    distributor.start()
    resources = {"cores": 1, "memory": "1G", "runtime": 3600, "queue": "all"}
    start = time.perf_counter()
    if arrays:
        for first in range(0, tasks, array_size):
            distributor.submit_array_to_batch_distributor(
                command="array --array-id 1 --batch-number 0",
                name="bench-array",
                requested_resources=resources,
                array_length=min(array_size, tasks - first),
            )
    else:
        for _ in range(tasks):
            distributor.submit_to_batch_distributor(
                command="job --task-instance-id 1",
                name="bench-task",
                requested_resources=resources,
            )
    elapsed = time.perf_counter() - start
    distributor.stop()
    return elapsed


def run_full_path(tasks: int, array_size: int, arrays: bool, root: str) -> Result:
    """The full path into a new channel at `root` (left in place: see `main`)."""
    queue = DummyQueue(1, "all", QUEUE_PARAMETERS)
    distributor = (DummyDistributor if arrays else SinglesOnlyDistributor)("dummy")
    distributor.start()
    channel = open_channel(f"file://{root}", create=True)
    try:
        return dispatch(tasks, channel, queue, distributor, array_size)
    finally:
        channel.close()
        distributor.stop()


def file_system_of(path: str) -> str:
    """The type of the file system holding `path`, from /proc/mounts ("?" elsewhere)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def rate(tasks: int, seconds: float) -> float:
    return tasks / seconds if seconds > 0 else float("inf")


def report(label: str, result: Result, baseline: float, baseline_name: str) -> None:
    tasks, total = result.tasks, result.total
    full = rate(tasks, total)
    plugin = rate(tasks, baseline)
    shape = (
        f"{result.arrays} arrays"
        if result.arrays
        else f"{result.singles} single submissions, arrays refused"
    )
    print(
        f"full path, {label:<7}: {full:8.0f} tasks/s in {total:6.2f} s "
        f"({result.groups} groups, {shape})"
    )
    print(
        f"    vs {baseline_name} alone ({plugin:.0f} tasks/s): ratio {full / plugin:.4f} "
        f"(the plugin call alone is {plugin / full:.0f}x faster)"
    )
    phases = " | ".join(
        f"{name} {rate(tasks, seconds):.0f}/s {seconds:.3f} s {100 * seconds / total:.1f}%"
        for name, seconds in result.phases.items()
    )
    print(f"    {phases}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="task instances (10000)")
    parser.add_argument(
        "--array-size", type=int, default=1000, help="most instances per array (1000)"
    )
    parser.add_argument(
        "--no-arrays",
        action="store_true",
        help="run only the single-submission (NotImplementedError fallback) path",
    )
    parser.add_argument(
        "--dir", default=None, help="where to make the temporary channel (the system temp dir)"
    )
    args = parser.parse_args()
    if args.tasks < 1 or args.array_size < 1:
        parser.error("--tasks and --array-size must be at least 1")

    parent = os.path.realpath(args.dir or tempfile.gettempdir())
    print(
        f"dispatch of {args.tasks} task instances: dummy backend, file channel under {parent} "
        f"({file_system_of(parent)}), arrays of at most {args.array_size}, "
        f"{len(REQUESTS)} request shapes"
    )
    array_alone = plugin_alone(args.tasks, args.array_size, arrays=True)
    single_alone = plugin_alone(args.tasks, args.array_size, arrays=False)
    print(
        f"plugin alone: submit_array_to_batch_distributor {rate(args.tasks, array_alone):9.0f} "
        f"tasks/s, submit_to_batch_distributor {rate(args.tasks, single_alone):9.0f} tasks/s"
    )
    rates = []
    # Both runs' channels are removed together at the end: on ext4, creating files just after
    # deleting many in the same place is slower (the allocator skips recently deleted inodes),
    # which would penalise whichever run came second.
    with tempfile.TemporaryDirectory(prefix="jobfleet-bench-dispatch-", dir=parent) as root:
        if not args.no_arrays:
            result = run_full_path(args.tasks, args.array_size, True, f"{root}/arrays")
            report("arrays", result, array_alone, "submit_array_to_batch_distributor")
            rates.append(("arrays", rate(args.tasks, result.total)))
        result = run_full_path(args.tasks, args.array_size, False, f"{root}/singles")
        report("singles", result, single_alone, "submit_to_batch_distributor")
        rates.append(("singles", rate(args.tasks, result.total)))
    verdict = ", ".join(
        f"{label} {value:.0f}/s {'met' if value >= TARGET else 'NOT met'}" for label, value in rates
    )
    print(f"target >= {TARGET:.0f} tasks/s for the full path: {verdict}")


if __name__ == "__main__":
    main()
