"""PSI/J's JobSpec and ResourceSpecV1 as a jobfleet task, and the ledger's states as PSI/J's.

Pure functions of their inputs (no ledger, no backend), so that the unit tests can hold every
row of the tables in docs/psij.md to the code.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psij import InvalidJobException, JobAttributes, JobSpec, JobState, ResourceSpecV1

# Custom attributes with this prefix are jobfleet resource keys (`jobfleet.constraint`); those
# prefixed with the backend's name (`slurm.qos`) too, on that backend only. Others are meant
# for other executors and are ignored, as PSI/J's batch executors ignore foreign prefixes.
ATTRIBUTE_PREFIX = "jobfleet"


@dataclass(frozen=True)
class TaskParts:
    """What a PSI/J job becomes in jobfleet: the task's resources and its environment (the
    command is the launcher's argv, made by the executor, which owns the launchers)."""

    resources: dict[str, Any]
    env: dict[str, str]


def resources_of(spec: JobSpec, cluster: str) -> dict[str, Any]:
    """The jobfleet resource request for a job: ResourceSpecV1 and JobAttributes together.

    Raises InvalidJobException for what jobfleet cannot run (more than one node, another kind
    of resource spec), so that the job is refused at submission rather than run wrongly.
    """
    resources: dict[str, Any] = {}
    spec_resources = spec.resources
    if spec_resources is not None:
        if not isinstance(spec_resources, ResourceSpecV1):
            raise InvalidJobException(
                f"jobfleet reads ResourceSpecV1 only, not {type(spec_resources).__name__}"
            )
        resources.update(_from_resource_spec(spec_resources))
    if spec.attributes is not None:
        resources.update(_from_attributes(spec.attributes, cluster))
    return resources


def _from_resource_spec(spec: ResourceSpecV1) -> dict[str, Any]:
    if spec.computed_node_count > 1:
        raise InvalidJobException(
            f"jobfleet runs each job within one node; this one asks for {spec.computed_node_count}"
            " nodes (node_count, or process_count over processes_per_node)"
        )
    processes = spec.computed_processes_per_node
    out: dict[str, Any] = {}
    # A process counts as one core unless it asks for more (PSI/J leaves the default open).
    out["cores"] = processes * (spec.cpu_cores_per_process or 1)
    if spec.gpu_cores_per_process:
        out["gpus"] = processes * spec.gpu_cores_per_process
    if spec.memory is not None:
        out["memory"] = f"{int(spec.memory)}B"
    if spec.exclusive_node_use:
        out["exclusive"] = True
    return out


def _from_attributes(attributes: JobAttributes, cluster: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if attributes.duration is not None:
        out["runtime"] = max(1, math.ceil(attributes.duration.total_seconds()))
    if attributes.queue_name:
        out["queue"] = attributes.queue_name
    if attributes.account:  # `project_name` is PSI/J's deprecated alias of it
        out["account"] = attributes.account
    if attributes.reservation_id:
        out["reservation"] = attributes.reservation_id
    for key, value in (attributes.custom_attributes or {}).items():
        prefix, dot, name = key.partition(".")
        if dot and name and prefix.lower() in (ATTRIBUTE_PREFIX, cluster.lower()):
            out[name] = value
    return out


def environment_of(spec: JobSpec) -> dict[str, str]:
    """The job's own environment variables, as strings (PSI/J allows int values)."""
    return {str(key): str(value) for key, value in (spec.environment or {}).items()}


def shell_command(
    argv: Sequence[str],
    *,
    directory: str | None,
    env: Mapping[str, str],
    inherit_environment: bool,
    nodefile: str | None = None,
    process_count: int = 1,
) -> tuple[str, dict[str, str]]:
    """The task's shell command for a launcher argv, and the env jobfleet sets for it.

    The working directory becomes a `cd`; with `inherit_environment=False` the launcher starts
    under `env -i` with the job's variables alone (which then travel on its command line,
    not in the task's env, which jobfleet adds to the inherited environment). `nodefile`: where
    the command writes PSI/J's node file ($PSIJ_NODEFILE: the node's name once per process;
    jobfleet runs a job within one node), on the node, before the launcher starts.
    """
    words = list(argv)
    task_env = dict(env)
    if nodefile is not None:
        task_env["PSIJ_NODEFILE"] = nodefile
    if not inherit_environment:
        words = ["env", "-i", *(f"{key}={value}" for key, value in task_env.items()), *words]
        task_env = {}
    command = "exec " + shlex.join(words)
    if directory is not None:
        command = f"cd {shlex.quote(directory)} && {command}"
    if nodefile is not None:
        path = shlex.quote(nodefile)
        command = (
            f"mkdir -p {shlex.quote(os.path.dirname(nodefile))} && _psij_node=$(hostname) && "
            f'for _ in $(seq {int(process_count)}); do echo "$_psij_node"; done > {path} && '
            + command
        )
    return command, task_env


# The ledger's instance states (Jobmon's letters) as PSI/J states, while a task is pending.
_PENDING_STATES: Mapping[str, JobState] = {
    "Q": JobState.QUEUED,
    "I": JobState.QUEUED,
    "O": JobState.QUEUED,
    "W": JobState.QUEUED,  # not accepted by the backend; a retry or the task's end follows
    "R": JobState.ACTIVE,
    "T": JobState.ACTIVE,
    "X": JobState.QUEUED,  # launched, never heard from: still waiting to be known to run
}

_TASK_END_STATES: Mapping[str, JobState] = {
    "done": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "killed": JobState.CANCELED,
}


@dataclass(frozen=True)
class Observed:
    """Where a jobfleet run of one task stands, as the executor reads it from the ledger."""

    run_status: str
    task_state: str
    instance_state: str | None
    exit_record: Mapping[str, Any] | None = None
    started: bool = False


def psij_state(observed: Observed) -> JobState:
    """The PSI/J state of a run of one task."""
    if observed.run_status == "killed" or observed.instance_state == "K":
        return JobState.CANCELED
    ended = _TASK_END_STATES.get(observed.task_state)
    if ended is not None:
        return ended
    if observed.instance_state is None:
        return JobState.QUEUED
    state = _PENDING_STATES.get(observed.instance_state)
    if state is not None:
        return state
    # An attempt that ended with its retry still to come: the job has run, and is not over.
    return JobState.ACTIVE if observed.started else JobState.QUEUED


def exit_code_of(exit_record: Mapping[str, Any] | None) -> int | None:
    """The exit code PSI/J reports: the command's own, or 128 + the signal that ended it."""
    if not exit_record:
        return None
    code = exit_record.get("exit_code")
    if isinstance(code, int):
        return code
    signal = exit_record.get("signal")
    if isinstance(signal, int):
        return 128 + signal
    return None


def message_of(observed: Observed) -> str | None:
    """A message for a failed or canceled job: how jobfleet saw it end."""
    record = observed.exit_record or {}
    told = str(record.get("message") or record.get("reason") or "")
    if observed.instance_state is None:
        return told or None
    return f"jobfleet state {observed.instance_state}" + (f": {told}" if told else "")
