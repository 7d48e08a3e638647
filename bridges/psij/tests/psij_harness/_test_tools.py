"""The helpers PSI/J's tests import (`from _test_tools import ...`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from executor_test_params import ExecutorTestParams
from psij import Job, JobAttributes, JobExecutor, JobState, JobStatus, ResourceSpecV1

TEST_DIR = Path.home() / ".psij" / "test"
"""Where the tests keep their files: on a file system the job's node shares."""
TIMEOUT = timedelta(minutes=float(os.environ.get("PSIJ_TEST_TIMEOUT_MINUTES", "5")))


def _make_test_dir() -> None:
    TEST_DIR.mkdir(parents=True, exist_ok=True)


def _get_timeout(execparams: ExecutorTestParams) -> timedelta:
    return TIMEOUT


def _contents(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        return f"<{exc}>"


def assert_completed(job: Job, status: JobStatus | None, attached: bool = False) -> None:
    assert status is not None, f"{job} did not end within the timeout"
    if status.state == JobState.COMPLETED:
        return
    detail = f"exit code {status.exit_code}, message {status.message!r}"
    if not attached and job.spec is not None:
        detail += (
            f", stdout {_contents(job.spec.stdout_path)!r}"
            f", stderr {_contents(job.spec.stderr_path)!r}"
        )
    raise AssertionError(f"{job} ended {status.state}, not COMPLETED: {detail}")


def _get_executor_instance(ep: ExecutorTestParams, job: Job | None = None) -> JobExecutor:
    """The executor under test; `job` gets the launcher and the queue details of `ep`."""
    if job is not None:
        assert job.spec is not None
        job.spec.launcher = ep.launcher
        attributes = JobAttributes(custom_attributes=ep.custom_attributes)
        if ep.account is not None:
            attributes.account = ep.account
        if ep.project_name is not None:
            attributes.project_name = ep.project_name
        if ep.queue_name is not None:
            attributes.queue_name = ep.queue_name
        resources = job.spec.resources
        if (
            isinstance(resources, ResourceSpecV1)
            and resources.computed_node_count > 1
            and ep.multi_node_queue_name is not None
        ):
            attributes.queue_name = ep.multi_node_queue_name
        job.spec.attributes = attributes
    return JobExecutor.get_instance(ep.executor, url=ep.url)


@contextmanager
def _deploy(path: str | Path) -> Iterator[Path]:
    """A copy of `path` in the shared test directory, removed afterwards."""
    _make_test_dir()
    handle, name = tempfile.mkstemp(dir=TEST_DIR)
    os.close(handle)
    try:
        shutil.copyfile(path, name)
        yield Path(name)
    finally:
        os.unlink(name)
