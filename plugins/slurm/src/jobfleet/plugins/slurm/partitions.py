"""Slurm's partitions as jobfleet queues (`jobfleet queues sync --cluster slurm`)."""

from __future__ import annotations

import re
from typing import Any

from jobfleet.core.queue import DEFAULT_QUEUE
from jobfleet.plugins.slurm.accounting import parse_duration
from jobfleet.plugins.slurm.commands import SlurmCommands

_UNLIMITED = {"UNLIMITED", "INFINITE", "NONE", ""}


def read_queues(commands: SlurmCommands) -> dict[str, dict[str, Any]]:
    """Every partition's limits, and its copy under "default" for the default partition.

    Limits per node: a task is one process tree on one node, so max_cores and max_memory are
    the smaller of the partition's per-node maximum and its largest node.
    """
    partitions = parse_partitions(commands.run(["scontrol", "show", "partition", "--oneliner"]))
    nodes = parse_sinfo(commands.run(["sinfo", "-h", "-o", "%R|%c|%m|%G"]))
    queues: dict[str, dict[str, Any]] = {}
    for name, fields in partitions.items():
        parameters = _parameters(fields, nodes.get(name, {}))
        queues[name] = parameters
        if fields.get("Default") == "YES":
            queues[DEFAULT_QUEUE] = {**parameters, "partition": name}
    return queues


def parse_partitions(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show partition --oneliner`: one `Key=Value …` line per partition."""
    partitions = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "PartitionName" in fields:
            partitions[fields["PartitionName"]] = fields
    return partitions


def parse_sinfo(text: str) -> dict[str, dict[str, int]]:
    """`sinfo -h -o '%R|%c|%m|%G'`: the largest node of each partition (cpus, MB, GPUs)."""
    found: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, cpus, memory, gres = parts
        entry = found.setdefault(name, {"cpus": 0, "memory_mb": 0, "gpus": 0})
        entry["cpus"] = max(entry["cpus"], _number(cpus))
        entry["memory_mb"] = max(entry["memory_mb"], _number(memory))
        entry["gpus"] = max(entry["gpus"], _gpus(gres))
    return found


def _parameters(fields: dict[str, str], node: dict[str, int]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    cores = _smallest(_limit(fields.get("MaxCPUsPerNode")), node.get("cpus") or None)
    if cores:
        parameters["max_cores"] = cores
    memory = _smallest(_limit(fields.get("MaxMemPerNode")), node.get("memory_mb") or None)
    if memory:
        parameters["max_memory"] = f"{memory}M"
    runtime = _minutes_or_duration(fields.get("MaxTime"))
    if runtime:
        parameters["max_runtime"] = runtime
    default_runtime = _minutes_or_duration(fields.get("DefaultTime"))
    if default_runtime:
        parameters["default_runtime"] = default_runtime
    parameters["max_gpus"] = node.get("gpus", 0)
    return parameters


def _limit(text: str | None) -> int | None:
    if text is None or text.upper() in _UNLIMITED:
        return None
    return _number(text) or None


def _smallest(*values: int | None) -> int | None:
    known = [value for value in values if value]
    return min(known) if known else None


def _minutes_or_duration(text: str | None) -> int | None:
    """Slurm's partition times: UNLIMITED, minutes, or [D-]HH:MM:SS."""
    if text is None or text.upper() in _UNLIMITED:
        return None
    if text.isdigit():
        return int(text) * 60
    seconds = parse_duration(text)
    return int(seconds) if seconds else None


def _number(text: str) -> int:
    found = re.match(r"\d+", text.strip())
    return int(found.group()) if found else 0


def _gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total
