"""The usage a final report carries: what a task used, from three sources.

Memory of its whole process tree, cpu, I/O, GPU memory. Each source has a blind spot
(docs/usage.md explains them):
- the task's own cgroup (`cgroup.py`) knows the true peak of the whole tree, when there is one;
- `TreeSampler` (`sampler.py`) walks the tree while it runs: shared pages counted once (PSS),
  escaped and re-parented processes still followed, but peaks between two samples can be missed;
- the task's rusage (wait4, or a RUSAGE_CHILDREN delta) covers every reaped descendant's cpu,
  but its maxrss is one process's peak, floored by the wrapper's own size at fork time.
`combine()` turns them into the protocol's usage dict and says in `usage_str` which one won.
It never needs psutil. Imports are kept few: the wrapper pays for them before every task.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import sys

# Where `TreeSampler` lived before the sampler had a module of its own.
from jobfleet.worker_node.sampler import TreeSample, TreeSampler

# typing is only for the type checker: this idiom saves importing it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "TreeSample",
    "TreeSampler",
    "combine",
    "current_rss",
    "gpu_usage",
    "rusage_sum",
]

# A fork-floored ru_maxrss is the wrapper's RSS at fork plus a little; above this it is the task.
_FORK_FLOOR_MARGIN = 1.05
# ru_maxrss is in KiB on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
# ru_inblock / ru_oublock count 512-byte blocks.
_BLOCK = 512


def combine(
    *,
    sample: TreeSample | None,
    children_rusage: resource.struct_rusage,
    wallclock: float,
    cgroup_peak: int | None,
    wrapper_rss_at_start: int | None,
    gpu: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The protocol's usage dict: maxrss (bytes), cpu (seconds), wallclock, usage_str (JSON).

    maxrss: the task cgroup's peak when it ran in one; else the larger of the sampled peak and
    the children's ru_maxrss, where ru_maxrss only counts if it is above the wrapper's RSS at
    fork (+5%), since below that it may be the wrapper's own pages copied by fork.
    cpu: the children's rusage (every reaped descendant), or the sampled cpu when larger (it
    also sees processes nobody reaped, such as daemons adopted by init).
    """
    import json  # here: the sampler, imported before every task, never needs it

    sampled = _sampled_peak(sample)
    rusage_maxrss = int(children_rusage.ru_maxrss) * _MAXRSS_UNIT
    maxrss, source = _pick_maxrss(sampled, rusage_maxrss, cgroup_peak, wrapper_rss_at_start)
    user, system, cpu_source = _pick_cpu(sample, children_rusage)
    details: dict[str, Any] = {
        "maxrss_source": source,
        "metric": sample.metric if sample is not None else "none",
        "user": round(user, 6),
        "system": round(system, 6),
        "cpu_source": cpu_source,
        "read_bytes": max(sample.read_bytes if sample else 0, children_rusage.ru_inblock * _BLOCK),
        "write_bytes": max(
            sample.write_bytes if sample else 0, children_rusage.ru_oublock * _BLOCK
        ),
        "peak_processes": sample.peak_processes if sample else None,
        "processes_seen": sample.processes_seen if sample else None,
        "samples": sample.samples if sample else 0,
        "rusage_maxrss": rusage_maxrss,
        "sampled_peak": sample.peak_bytes if sample else None,
        "largest_process_peak": sample.largest_process_peak if sample else None,
        "cgroup_peak": cgroup_peak,
    }
    if gpu is not None:
        details["gpu_memory"] = gpu
    return {
        "maxrss": maxrss,
        "cpu": round(user + system, 6),
        "wallclock": wallclock,
        "usage_str": json.dumps(details, sort_keys=True, separators=(",", ":")),
    }


def _sampled_peak(sample: TreeSample | None) -> int | None:
    """The sampler's answer, or None if it never measured a process (then it knows nothing)."""
    if sample is None or sample.processes_seen == 0:
        return None
    # A single process's VmHWM catches a peak that fell between two samples.
    return max(sample.peak_bytes, sample.largest_process_peak)


def _pick_maxrss(
    sampled: int | None, rusage_maxrss: int, cgroup_peak: int | None, wrapper_rss: int | None
) -> tuple[int, str]:
    if cgroup_peak is not None:
        return cgroup_peak, "cgroup"
    floored = wrapper_rss is not None and rusage_maxrss <= wrapper_rss * _FORK_FLOOR_MARGIN
    if sampled is None:
        # Nothing else to go by: a floored value is still an upper bound of the task's peak.
        return rusage_maxrss, "rusage_bound" if floored else "rusage"
    if not floored and rusage_maxrss > sampled:
        return rusage_maxrss, "rusage"
    return sampled, "sampled"


def _pick_cpu(
    sample: TreeSample | None, rusage: resource.struct_rusage
) -> tuple[float, float, str]:
    # Never the sum: the two overlap for every process that was both sampled and reaped.
    if (
        sample is not None
        and sample.cpu_user + sample.cpu_system > rusage.ru_utime + rusage.ru_stime
    ):
        return sample.cpu_user, sample.cpu_system, "sampled"
    return rusage.ru_utime, rusage.ru_stime, "rusage"


def rusage_sum(usages: list[resource.struct_rusage]) -> resource.struct_rusage:
    """One rusage for the task and every orphan the wrapper reaped (wait4 gives one each).

    Times and counters add up; ru_maxrss is a maximum, not a sum, so it is the largest.
    """
    fields = list(usages[0])
    for usage in usages[1:]:
        for index, value in enumerate(usage):
            fields[index] = max(fields[index], value) if index == 2 else fields[index] + value
    return resource.struct_rusage(fields)


def current_rss() -> int | None:
    """This process's RSS in bytes now (Linux), else its peak RSS (never less than now)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT
    except OSError:
        return None


# -- GPUs -----------------------------------------------------------------------------------------

_NO_NVML: list[bool] = []
"""Non-empty once pynvml was found missing in this process."""


def gpu_usage(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Memory in use (bytes) on each visible GPU, keyed by NVML index; None without NVML.

    The whole device's use, not only this task's: per-process figures need NVML features that
    are missing in containers. "Visible" follows CUDA_VISIBLE_DEVICES (indices or UUIDs).
    """
    if _NO_NVML:
        return None
    try:
        nvml: Any = importlib.import_module("pynvml")  # optional, never a dependency
    except ImportError:
        _NO_NVML.append(True)  # a slot worker asks before every task: look once
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None
    try:
        visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
        return _gpu_memory(nvml, visible)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _gpu_memory(nvml: Any, visible: str | None) -> dict[str, Any]:
    wanted = None if visible is None else {item.strip() for item in visible.split(",")}
    used: dict[str, Any] = {}
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        if wanted is None or str(index) in wanted or uuid in wanted:
            used[str(index)] = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    return used
