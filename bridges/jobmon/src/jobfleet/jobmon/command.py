"""Jobmon's worker-node command, read strictly, and triage answers mapped into Jobmon's letters.

Jobmon's distributor service builds the worker-node arguments with
`ClusterDistributor.build_worker_node_command` and hands them to the plugin, which puts its
`worker_node_entry_point` in front. The bridge accepts exactly the two forms Jobmon builds and
nothing else: anything else would run an unknown program on the cluster.

    worker_node_job --task_instance_id 12 --expected_jobmon_version 3.4.8 --cluster_name c
    worker_node_array --array_id 3 --batch_number 0 --expected_jobmon_version 3.4.8 --cluster_name c
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Final

from jobfleet.core.exit_info import ErrorState

__all__ = [
    "TRIAGE_STATES",
    "JobmonCommandError",
    "WorkerCommand",
    "parse_worker_command",
    "triage_state",
]


class JobmonCommandError(ValueError):
    """The arguments are not a worker-node command Jobmon builds."""


@dataclass(frozen=True)
class WorkerCommand:
    """One Jobmon worker-node command: a task instance's (`job`) or an array batch's."""

    kind: str
    """`job` or `array`."""
    expected_jobmon_version: str
    cluster_name: str
    task_instance_id: int | None = None
    array_id: int | None = None
    batch_number: int | None = None

    def argv(self) -> list[str]:
        """The arguments again, in Jobmon's order (what follows `worker_node_entry_point`)."""
        if self.kind == "job":
            head = ["worker_node_job", "--task_instance_id", str(self.task_instance_id)]
        else:
            head = [
                "worker_node_array",
                "--array_id",
                str(self.array_id),
                "--batch_number",
                str(self.batch_number),
            ]
        tail = ["--expected_jobmon_version", self.expected_jobmon_version]
        return [*head, *tail, "--cluster_name", self.cluster_name]


_OPTIONS: Final = {
    "worker_node_job": ("--task_instance_id",),
    "worker_node_array": ("--array_id", "--batch_number"),
}
_COMMON: Final = ("--expected_jobmon_version", "--cluster_name")
_ID: Final = re.compile(r"[0-9]{1,18}")
_VERSION: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}")
_CLUSTER: Final = re.compile(r"[^\s'\"`$\\;&|<>(){}*?\[\]#~]{1,255}")


def parse_worker_command(command: str) -> WorkerCommand:
    """Read Jobmon's worker-node arguments; `JobmonCommandError` for anything else.

    Every option must appear exactly once, with a value of the expected form (ids are
    non-negative integers; the version and cluster name contain no shell syntax); no other
    word is accepted.
    """
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise _refused(command, f"it cannot be split into words ({exc})") from exc
    if not words or words[0] not in _OPTIONS:
        raise _refused(command, "it does not start with worker_node_job or worker_node_array")
    sub, rest = words[0], words[1:]
    expected = (*_OPTIONS[sub], *_COMMON)
    values: dict[str, str] = {}
    if len(rest) != 2 * len(expected):
        raise _refused(command, f"{sub} takes exactly the options {', '.join(expected)}")
    for option, value in zip(rest[::2], rest[1::2], strict=True):
        if option not in expected:
            raise _refused(command, f"{option!r} is not an option of {sub}")
        if option in values:
            raise _refused(command, f"{option} is given twice")
        values[option] = value
    for option in expected:
        numeric = option.endswith("_id") or option == "--batch_number"
        if numeric and not _ID.fullmatch(values[option]):
            raise _refused(command, f"{option} {values[option]!r} is not a whole number")
    if not _VERSION.fullmatch(values["--expected_jobmon_version"]):
        raise _refused(command, "--expected_jobmon_version is not a version")
    if not _CLUSTER.fullmatch(values["--cluster_name"]):
        raise _refused(command, "--cluster_name holds spaces or shell syntax")
    version, cluster = values["--expected_jobmon_version"], values["--cluster_name"]
    if sub == "worker_node_job":
        return WorkerCommand(
            "job", version, cluster, task_instance_id=int(values["--task_instance_id"])
        )
    return WorkerCommand(
        "array",
        version,
        cluster,
        array_id=int(values["--array_id"]),
        batch_number=int(values["--batch_number"]),
    )


def _refused(command: str, why: str) -> JobmonCommandError:
    return JobmonCommandError(
        f"The jobfleet bridge runs only Jobmon's own worker-node commands, and {command!r} is "
        f"not one: {why}. Expected e.g. 'worker_node_job --task_instance_id 12 "
        "--expected_jobmon_version 3.4.8 --cluster_name mycluster'."
    )


# -- triage -------------------------------------------------------------------------------------

TRIAGE_STATES: Final = {
    ErrorState.RESOURCE_ERROR: ErrorState.RESOURCE_ERROR,
    ErrorState.UNKNOWN_ERROR: ErrorState.UNKNOWN_ERROR,
    ErrorState.ERROR_FATAL: ErrorState.ERROR_FATAL,
    # Jobmon's triage takes only R, Z, U or F; any other letter leaves the instance in
    # triage for ever. An instance in triage missed its heartbeats: whatever its command did,
    # Jobmon's own worker did not report it, so a plain retry (U) is the honest answer.
    ErrorState.ERROR_RECOVERABLE: ErrorState.UNKNOWN_ERROR,
    ErrorState.DONE: ErrorState.UNKNOWN_ERROR,
    # Killed on request, but not by Jobmon (its own kills never reach triage): do not retry.
    ErrorState.KILL_SELF: ErrorState.ERROR_FATAL,
}
"""How jobfleet's error states answer Jobmon's triage (`get_remote_exit_info`)."""


def triage_state(state: str) -> str:
    """The letter Jobmon's triage accepts for a jobfleet error state (U for anything unknown)."""
    try:
        known = ErrorState(state)
    except ValueError:
        return ErrorState.UNKNOWN_ERROR.value
    return TRIAGE_STATES[known].value
