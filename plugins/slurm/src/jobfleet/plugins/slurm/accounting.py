"""Reading squeue and sacct output, and what a Slurm job state means for jobfleet.

Pure functions over text, so each mapping is tested without a cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.core.wrapper import exit_info_from_wrapper, status_from_output

SEPARATOR = "|"
_LAST_WORDS = 500  # characters of a job's output quoted in its exit message


# States in which a job still holds (or waits for) a place on the cluster.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "SPECIAL_EXIT",
    }
)

_SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "MaxRSS", "TotalCPU", "Elapsed", "End")
SACCT_FORMAT = ",".join(_SACCT_FIELDS)
SQUEUE_FORMAT = SEPARATOR.join(("%i", "%T", "%k"))  # id, state, comment


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    state: str
    comment: str


def parse_squeue(text: str) -> list[QueueEntry]:
    """Lines of `squeue -h -r -o '%i|%T|%k'`; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(SEPARATOR, 2)
        if len(parts) == 3 and parts[0]:
            entries.append(QueueEntry(parts[0], parts[1].strip().upper(), parts[2]))
    return entries


@dataclass(frozen=True)
class AccountingRecord:
    """One job (or array task) as sacct reports it, with its batch step's usage folded in."""

    job_id: str
    name: str
    state: str
    cancelled_by: int | None
    exit_code: int | None
    signal: int | None
    max_rss: int | None
    total_cpu: float | None
    elapsed: float | None
    end: str

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES and self.state != ""


def parse_sacct(text: str) -> dict[str, AccountingRecord]:
    """`sacct --parsable2 --noheader --format=<SACCT_FORMAT>` output, by job id.

    Steps (`123.batch`, `123_4.extern`) carry the memory and CPU of what ran; their largest
    MaxRSS and summed TotalCPU are folded into the job's record.
    """
    jobs: dict[str, list[str]] = {}
    steps: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        fields = line.split(SEPARATOR)
        if len(fields) != len(_SACCT_FIELDS) or not fields[0]:
            continue
        job_id, _, step = fields[0].partition(".")
        if step:
            steps.setdefault(job_id, []).append(fields)
        else:
            jobs[job_id] = fields
    return {job_id: _record(fields, steps.get(job_id, [])) for job_id, fields in jobs.items()}


def _record(fields: list[str], steps: list[list[str]]) -> AccountingRecord:
    job_id, name, state_text, exit_text, max_rss, total_cpu, elapsed, end = fields
    state, _, rest = state_text.strip().partition(" ")
    cancelled_by = None
    found = re.fullmatch(r"by (\d+)", rest.strip())
    if found:
        cancelled_by = int(found.group(1))
    exit_code, signal = _exit_code(exit_text)
    rss_values = [rss for s in steps if (rss := parse_size(s[4])) is not None]
    cpu_values = [cpu for s in steps if (cpu := parse_duration(s[5])) is not None]
    return AccountingRecord(
        job_id=job_id,
        name=name,
        state=state.upper().rstrip("+"),
        cancelled_by=cancelled_by,
        exit_code=exit_code,
        signal=signal,
        max_rss=max(rss_values) if rss_values else parse_size(max_rss),
        total_cpu=sum(cpu_values) if cpu_values else parse_duration(total_cpu),
        elapsed=parse_duration(elapsed),
        end=end,
    )


def _exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, signal = text.partition(":")
    return (int(code) if code.isdigit() else None, int(signal) if signal.isdigit() else None)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str) -> int | None:
    """sacct's sizes ("1234K", "1.50M", "0") in bytes; None when empty or unreadable."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)", text.strip())
    if not found:
        return None
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2)])


def parse_duration(text: str) -> float | None:
    """Slurm's durations ("MM:SS.mmm", "HH:MM:SS", "D-HH:MM:SS") in seconds."""
    text = text.strip()
    days = 0
    if "-" in text:
        day_text, _, text = text.partition("-")
        if not day_text.isdigit():
            return None
        days = int(day_text)
    parts = text.split(":")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        return None
    if not 1 <= len(numbers) <= 3:
        return None
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return days * 86400 + seconds


def exit_info(record: AccountingRecord, *, killed_by_us: bool, output: str = "") -> RemoteExitInfo:
    """What jobfleet makes of a job's accounting record (see the backend's README).

    The job's process is the worker-node wrapper, so a job that completed or failed is read
    with the mapping every backend shares (`exit_info_from_wrapper`); the states only Slurm
    has (out of memory, timeouts, node failures, preemption, cancellation) are read here.
    `output` is the end of the job's output file: the wrapper's last words, and the whole exit
    status where sacct's is truncated (see `full_exit_code`).
    """
    if not record.finished:
        return RemoteExitInfo.unknown(
            f"Slurm says {record.state or 'nothing yet'}", finalized=False
        )
    state = record.state
    if state in ("TIMEOUT", "DEADLINE"):
        return _info(ExitReason.TIMEOUT, record, "reached its --time limit")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return _info(ExitReason.NODE_FAIL, record, f"{state.lower().replace('_', ' ')}")
    if state == "PREEMPTED":
        return _info(ExitReason.PREEMPTED, record, "preempted and not requeued")
    if state == "CANCELLED":
        return _cancelled(record, killed_by_us)
    if state == "OUT_OF_MEMORY":
        # Slurm's cgroup killed the job for its --mem: Z, whoever of the task and the wrapper
        # the kernel picked, and whatever exit status that left.
        return _info(ExitReason.OOM, record, "ran out of its --mem")
    if state in ("FAILED", "COMPLETED"):
        return _from_wrapper(record, output)
    return RemoteExitInfo.unknown(f"Slurm state {state} is not one jobfleet knows")


def _from_wrapper(record: AccountingRecord, output: str) -> RemoteExitInfo:
    detail = f"Slurm job {record.job_id} ({record.state}, ExitCode {_exit_text(record)})"
    last_words = output.strip()[-_LAST_WORDS:]
    if last_words:
        detail += f"; its last words: {last_words!r}"
    shared = exit_info_from_wrapper(
        full_exit_code(record, output),
        record.signal or None,
        raw_state=record.state,
        detail=detail,
    )
    return shared.replace(usage=usage_of(record))


def full_exit_code(record: AccountingRecord, output: str) -> int | None:
    """The job's exit status, whole.

    Slurm's accounting keeps 7 bits of a batch job's exit status (seen with Slurm 22.05: exit
    240 reads `112:0`, 137 reads `9:0`), so the wrapper states its status in its output when it
    is 128 or more; that statement wins when its low 7 bits are what sacct says.
    """
    stated = status_from_output(output)
    if stated is not None and not record.signal and record.exit_code == stated & 0x7F:
        return stated
    return record.exit_code


def _exit_text(record: AccountingRecord) -> str:
    code = "?" if record.exit_code is None else str(record.exit_code)
    return f"{code}:{record.signal or 0}"


def _cancelled(record: AccountingRecord, killed_by_us: bool) -> RemoteExitInfo:
    if killed_by_us:
        return _info(ExitReason.CANCELLED, record, "cancelled on request")
    who = f"user id {record.cancelled_by}" if record.cancelled_by is not None else "someone"
    message = f"cancelled by {who} (not by jobfleet) at {record.end or 'an unknown time'}"
    exit_record = _exit_record(ExitReason.CANCELLED, record, message)
    return RemoteExitInfo(ErrorState.ERROR_FATAL, message, record=exit_record)


def _info(reason: ExitReason, record: AccountingRecord, what: str) -> RemoteExitInfo:
    message = f"Slurm job {record.job_id} {what} ({record.state}, exit {record.exit_code})"
    exit_record = _exit_record(reason, record, message)
    return RemoteExitInfo(
        reason.default_error_state, message, record=exit_record, usage=usage_of(record)
    )


def usage_of(record: AccountingRecord) -> dict[str, Any] | None:
    """sacct's measurement of the job (its wrapper included), in the protocol's keys."""
    if record.max_rss is None and record.total_cpu is None and record.elapsed is None:
        return None
    details = {"maxrss_source": "sacct", "raw_state": record.state}
    return {
        "maxrss": record.max_rss,
        "cpu": record.total_cpu,
        "wallclock": record.elapsed,
        "usage_str": json.dumps(details),
    }


def _exit_record(reason: ExitReason, record: AccountingRecord, message: str) -> ExitRecord:
    return ExitRecord(
        reason=reason,
        exit_code=record.exit_code,
        signal=record.signal or None,
        raw_state=record.state,
        message=message,
    )


def job_ids_argument(ids: Iterable[str]) -> str:
    """The ids as one comma-separated argument (sacct --jobs, squeue --jobs)."""
    return ",".join(sorted(set(ids)))
