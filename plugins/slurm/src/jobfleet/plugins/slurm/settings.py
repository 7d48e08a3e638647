"""Settings of the Slurm backend (`--slurm-…`, `JOBFLEET_SLURM_…`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from jobfleet.core.settings import setting

# sbatch options that would break how jobfleet tracks its jobs, or that it sets itself.
DENIED_OPTIONS = frozenset(
    {
        "--parsable",
        "--array",
        "-a",
        "--job-name",
        "-J",
        "--comment",
        "--output",
        "-o",
        "--error",
        "-e",
        "--wrap",
        "--export",
        "--dependency",
        "-d",
        "--wait",
        "-W",
        "--test-only",
        "--hold",
        "-H",
        "--chdir",
        "-D",
    }
)


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = setting(
        None, help="Partition for tasks whose queue names none (default: the cluster's default)."
    )
    account: str | None = setting(None, help="Account to charge (sbatch --account).")
    qos: str | None = setting(None, help="Quality of service (sbatch --qos).")
    extra_sbatch: str = setting(
        "",
        help="More sbatch options, e.g. '--exclusive --reservation=r1'; options that would "
        "break tracking (--array, --job-name, --parsable, …) are refused.",
    )
    poll_min: float = setting(
        1.0, help="Seconds between squeue calls right after a submission or a change."
    )
    poll_max: float = setting(
        30.0, help="Longest pause between squeue calls while nothing changes."
    )
    max_queries_per_minute: int = setting(
        20, help="Hard limit on squeue plus sacct calls per minute, whatever the host asks."
    )
    array_throttle: int = setting(
        0, help="Most array tasks running at once (sbatch --array=…%N); 0 for no limit."
    )
    log_dir: str | None = setting(
        None, help="Where Slurm writes each job's own output (default: beside the host channel)."
    )
    use_sacct: bool = setting(
        True, help="Ask sacct about jobs that left squeue (needs slurmdbd accounting)."
    )
    command_timeout: float = setting(
        30.0, help="Seconds a Slurm command may take before it counts as failed."
    )

    def __post_init__(self) -> None:
        if self.poll_min <= 0 or self.poll_max < self.poll_min:
            raise ValueError(
                f"poll_min must be positive and at most poll_max, not {self.poll_min} and "
                f"{self.poll_max}"
            )
        if self.max_queries_per_minute < 1:
            raise ValueError(
                f"max_queries_per_minute must be 1 or more, not {self.max_queries_per_minute}"
            )
        if self.array_throttle < 0:
            raise ValueError(f"array_throttle must be 0 or more, not {self.array_throttle}")
        if self.command_timeout <= 0:
            raise ValueError(f"command_timeout must be positive, not {self.command_timeout}")
        extra_sbatch_options(self.extra_sbatch)


def extra_sbatch_options(text: str) -> list[str]:
    """The extra sbatch options as argv, refusing any that would break tracking."""
    try:
        options = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"extra_sbatch cannot be read as options: {exc}") from None
    for option in options:
        name = option.split("=", 1)[0]
        if name in DENIED_OPTIONS or (
            len(name) > 2 and name[0] == "-" and name[1] != "-" and name[:2] in DENIED_OPTIONS
        ):
            raise ValueError(
                f"extra_sbatch may not hold {name}: jobfleet sets it itself or it would break "
                f"how jobs are tracked (refused: {', '.join(sorted(DENIED_OPTIONS))})"
            )
        if not option.startswith("-"):
            raise ValueError(
                f"extra_sbatch holds {option!r}, which is not an option: give only options "
                "(write an option with a value as --name=value)"
            )
    return options
