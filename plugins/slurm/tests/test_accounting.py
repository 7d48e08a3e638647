"""Reading squeue and sacct output, and the mapping of Slurm states (no cluster needed)."""

from __future__ import annotations

import pytest

from jobfleet.core.exit_info import ErrorState, ExitReason
from jobfleet.plugins.slurm import accounting

TAG = "jobfleet-0123456789"


def sacct_lines(job: str, state: str, exit_code: str = "0:0", rss: str = "2048K") -> str:
    return "\n".join(
        [
            f"{job}|{TAG}|{state}|{exit_code}||00:00.010|00:00:03|2026-11-21T17:00:03",
            f"{job}.batch|batch|{state.split()[0]}|{exit_code}|{rss}|00:01.500|00:00:03|x",
            f"{job}.extern|extern|COMPLETED|0:0|512K|00:00.500|00:00:03|x",
        ]
    )


def record(state: str, exit_code: str = "0:0", job: str = "41") -> accounting.AccountingRecord:
    return accounting.parse_sacct(sacct_lines(job, state, exit_code))[job]


def test_sacct_folds_steps_into_the_job() -> None:
    found = record("COMPLETED")
    assert found.name == TAG
    assert found.max_rss == 2048 * 1024  # the largest step
    assert found.total_cpu == pytest.approx(2.0)  # the steps' sum
    assert found.elapsed == 3
    assert found.exit_code == 0
    assert found.finished


def test_array_tasks_keep_their_own_ids() -> None:
    text = sacct_lines("77_0", "COMPLETED") + "\n" + sacct_lines("77_1", "FAILED", "3:0")
    records = accounting.parse_sacct(text)
    assert set(records) == {"77_0", "77_1"}
    assert records["77_1"].exit_code == 3


@pytest.mark.parametrize(
    ("state", "exit_code", "letter", "reason"),
    [
        ("COMPLETED", "0:0", ErrorState.DONE, ExitReason.COMPLETED),
        ("FAILED", "3:0", ErrorState.ERROR_RECOVERABLE, ExitReason.FAILED),
        ("COMPLETED", "2:0", ErrorState.ERROR_RECOVERABLE, ExitReason.FAILED),
        ("OUT_OF_MEMORY", "0:125", ErrorState.RESOURCE_ERROR, ExitReason.OOM),
        ("TIMEOUT", "0:0", ErrorState.RESOURCE_ERROR, ExitReason.TIMEOUT),
        ("NODE_FAIL", "0:0", ErrorState.UNKNOWN_ERROR, ExitReason.NODE_FAIL),
        ("BOOT_FAIL", "0:0", ErrorState.UNKNOWN_ERROR, ExitReason.NODE_FAIL),
        ("PREEMPTED", "0:15", ErrorState.UNKNOWN_ERROR, ExitReason.PREEMPTED),
        # The job's process is the wrapper: killed by a signal, it never reported.
        ("FAILED", "0:9", ErrorState.UNKNOWN_ERROR, ExitReason.LOST),
        ("FAILED", "240:0", ErrorState.UNKNOWN_ERROR, ExitReason.LOST),
    ],
)
def test_final_states(state: str, exit_code: str, letter: ErrorState, reason: ExitReason) -> None:
    info = accounting.exit_info(record(state, exit_code), killed_by_us=False)
    assert info.finalized
    assert info.error_state is letter
    assert info.record is not None
    assert info.record.reason is reason
    assert info.record.raw_state == state


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED"])
def test_states_that_may_still_change_are_not_final(state: str) -> None:
    info = accounting.exit_info(record(state), killed_by_us=False)
    assert not info.finalized
    assert info.error_state is ErrorState.UNKNOWN_ERROR


def test_a_cancel_by_jobfleet_is_k_by_anyone_else_f_with_who_and_when() -> None:
    ours = accounting.exit_info(record("CANCELLED by 0", "0:15"), killed_by_us=True)
    assert ours.error_state is ErrorState.KILL_SELF
    theirs = accounting.exit_info(record("CANCELLED by 1001", "0:15"), killed_by_us=False)
    assert theirs.error_state is ErrorState.ERROR_FATAL
    assert "user id 1001" in theirs.error_message
    assert "2026-11-21T17:00:03" in theirs.error_message


def test_squeue_lines() -> None:
    entries = accounting.parse_squeue("12|RUNNING|tok1\n13_4|PENDING|tok2\nbroken\n")
    assert [(e.job_id, e.state, e.comment) for e in entries] == [
        ("12", "RUNNING", "tok1"),
        ("13_4", "PENDING", "tok2"),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:01.500", 1.5), ("01:02:03", 3723), ("2-00:00:01", 172801), ("", None), ("x", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert accounting.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("1234K", 1234 * 1024), ("1.5M", 1572864), ("0", 0), ("", None)]
)
def test_sizes(text: str, size: int | None) -> None:
    assert accounting.parse_size(text) == size


def test_final_answers_carry_sacct_usage() -> None:
    info = accounting.exit_info(record("OUT_OF_MEMORY", "0:125"), killed_by_us=False)
    assert info.usage is not None
    assert info.usage["maxrss"] == 2048 * 1024
    assert info.usage["cpu"] == pytest.approx(2.0)
    assert info.usage["wallclock"] == 3
    assert '"maxrss_source": "sacct"' in info.usage["usage_str"]


@pytest.mark.parametrize(
    ("exit_code", "output", "state", "reason"),
    [
        # Slurm keeps 7 bits of a batch job's status: the wrapper's own statement gives the rest.
        ("112:0", "jobfleet-worker-node: exit status 240\n", "U", ExitReason.LOST),
        ("113:0", "oops\njobfleet-worker-node: exit status 241\n", "F", ExitReason.LAUNCHER_ERROR),
        ("9:0", "jobfleet-worker-node: exit status 137\n", "E", ExitReason.FAILED),
        # Without it, or when it does not fit what sacct says, sacct's number stands.
        ("112:0", "", "E", ExitReason.FAILED),
        ("112:0", "jobfleet-worker-node: exit status 241\n", "E", ExitReason.FAILED),
        ("127:0", "", "F", ExitReason.LAUNCHER_ERROR),
        # A signal that ended the wrapper itself is kept by sacct: the wrapper never said a thing.
        ("0:9", "", "U", ExitReason.LOST),
    ],
)
def test_a_lost_report_is_read_with_the_shared_table_and_the_whole_status(
    exit_code: str, output: str, state: str, reason: ExitReason
) -> None:
    info = accounting.exit_info(record("FAILED", exit_code), killed_by_us=False, output=output)
    assert info.error_state is ErrorState(state), info.error_message
    assert info.record is not None
    assert info.record.reason is reason
    assert "Slurm job 41" in info.error_message


def test_the_wrappers_last_words_are_in_the_message() -> None:
    output = "jobfleet-worker-node: cannot open the host channel file:///gone\n"
    info = accounting.exit_info(record("FAILED", "112:0"), killed_by_us=False, output=output)
    assert "cannot open the host channel file:///gone" in info.error_message
