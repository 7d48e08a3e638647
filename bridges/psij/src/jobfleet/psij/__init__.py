"""PSI/J's `jobfleet` executor: `JobExecutor.get_instance("jobfleet", config=...)` runs PSI/J
jobs on any jobfleet backend (see docs/psij.md)."""

from jobfleet.psij.executor import JobfleetExecutorConfig, JobfleetJobExecutor

__all__ = ["JobfleetExecutorConfig", "JobfleetJobExecutor"]
