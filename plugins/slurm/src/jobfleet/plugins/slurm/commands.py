"""Running Slurm's commands: argv lists only, a timeout, errors that say what failed."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence

from jobfleet.core.errors import BackendError


class SlurmCommandError(BackendError):
    """A Slurm command failed or did not answer in time."""

    def __init__(self, argv: Sequence[str], problem: str, *, timed_out: bool = False) -> None:
        super().__init__(f"{' '.join(argv[:2])} failed: {problem}")
        self.argv = list(argv)
        self.timed_out = timed_out


class SlurmCommands:
    """Runs sbatch, squeue, sacct, scancel, scontrol and sinfo; counts the calls of each."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.calls: Counter[str] = Counter()

    def run(
        self, argv: Sequence[str], *, check: bool = True, env: Mapping[str, str] | None = None
    ) -> str:
        """The command's standard output; `SlurmCommandError` when it fails (if `check`).

        `env` replaces the command's environment (sbatch exports its own to the job)."""
        self.calls[argv[0]] += 1
        try:
            result = subprocess.run(
                list(argv),
                env=None if env is None else dict(env),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise SlurmCommandError(
                argv, f"no answer within {self.timeout:g} s", timed_out=True
            ) from None
        except OSError as exc:
            raise SlurmCommandError(argv, f"cannot run it: {exc}") from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise SlurmCommandError(
                argv, f"exit {result.returncode}: {detail[-1] if detail else 'no message'}"
            )
        return result.stdout
