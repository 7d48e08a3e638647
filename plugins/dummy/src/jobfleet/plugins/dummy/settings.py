"""Settings of the dummy backend (options `--dummy-…`, variables `JOBFLEET_DUMMY_…`)."""

from __future__ import annotations

from dataclasses import dataclass

from jobfleet.core.settings import setting


@dataclass(frozen=True)
class DummySettings:
    report_delay: float = setting(
        0.0, help="Seconds an instance counts as running before it is reported done."
    )
    fail_every: int = setting(
        0, help="Report every Nth submitted instance as an application error (E); 0 never."
    )

    def __post_init__(self) -> None:
        if self.report_delay < 0:
            raise ValueError(f"report_delay must be 0 or more seconds, not {self.report_delay}")
        if self.fail_every < 0:
            raise ValueError(
                f"fail_every must be 0 (never) or a positive count, not {self.fail_every}"
            )
