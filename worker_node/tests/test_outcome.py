"""Classification of how a task ended, from raw wait statuses built the way the kernel does."""

import signal

import pytest

from jobfleet.core.exit_info import ExitReason
from jobfleet.worker_node.outcome import Observation, classify

MIB = 1024 * 1024


def exited(code: int) -> int:
    return code << 8


def killed(sig: int, core: bool = False) -> int:
    return sig | (0x80 if core else 0)


@pytest.mark.parametrize(
    ("seen", "reason", "exit_code", "sig"),
    [
        (Observation(exited(0)), ExitReason.COMPLETED, 0, None),
        (Observation(exited(3)), ExitReason.FAILED, 3, None),
        (Observation(exited(126)), ExitReason.LAUNCHER_ERROR, 126, None),
        (Observation(exited(127)), ExitReason.LAUNCHER_ERROR, 127, None),
        (Observation(killed(signal.SIGSEGV)), ExitReason.FAILED, None, signal.SIGSEGV),
        (
            Observation(killed(signal.SIGTERM), timed_out=True),
            ExitReason.TIMEOUT,
            None,
            signal.SIGTERM,
        ),
        (Observation(exited(0), timed_out=True), ExitReason.TIMEOUT, 0, None),
        (Observation(killed(signal.SIGKILL), oom_kills=1), ExitReason.OOM, None, signal.SIGKILL),
        # One record shape for an OOM kill, whether a shell passed the SIGKILL on as 137 or not.
        (Observation(exited(137), oom_kills=1), ExitReason.OOM, None, signal.SIGKILL),
        (Observation(exited(0), oom_kills=1), ExitReason.COMPLETED, 0, None),
        (
            Observation(killed(signal.SIGKILL), memory_enforced=True),
            ExitReason.OOM,
            None,
            signal.SIGKILL,
        ),
        (
            Observation(killed(signal.SIGTERM), cancelled_by=signal.SIGTERM),
            ExitReason.CANCELLED,
            None,
            signal.SIGTERM,
        ),
        (Observation(exited(143), cancelled_by=signal.SIGTERM), ExitReason.CANCELLED, 143, None),
    ],
)
def test_classify(seen, reason, exit_code, sig):
    record = classify(seen)
    assert record.reason is reason
    assert record.exit_code == exit_code
    assert record.signal == sig
    assert record.message.startswith(reason.value)


def test_sigkill_near_the_limit_is_oom_without_a_cgroup():
    near = Observation(killed(signal.SIGKILL), memory_limit=100 * MIB, memory_peak=95 * MIB)
    far = Observation(killed(signal.SIGKILL), memory_limit=100 * MIB, memory_peak=20 * MIB)
    assert classify(near).reason is ExitReason.OOM
    assert classify(far).reason is ExitReason.FAILED


def test_core_dump_is_recorded():
    record = classify(Observation(killed(signal.SIGABRT, core=True)))
    assert record.core_dumped
    assert "SIGABRT" in record.message


def test_command_that_never_started():
    record = classify(Observation(None, start_error="[Errno 2] No such file: '/bin/sh'"))
    assert record.reason is ExitReason.LAUNCHER_ERROR
    assert record.exit_code is None
    assert "could not be started" in record.message


def test_unnamed_signal_does_not_break_the_report():
    record = classify(Observation(killed(signal.SIGRTMIN + 3)))
    assert record.signal == signal.SIGRTMIN + 3
    assert record.message
