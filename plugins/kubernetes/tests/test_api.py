"""The API layer alone: the token bucket, and retries when the server does not answer."""

from __future__ import annotations

import socket

import pytest

from jobfleet.core.errors import BackendError
from jobfleet.plugins.kubernetes.api import JOBS, KubeApi, TokenBucket


def test_the_token_bucket_spaces_calls_beyond_its_burst() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(5.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(15):
        bucket.take()
    assert now[0] == pytest.approx(2.0)  # 5 at once, then 10 more at 5 a second


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_answer_is_retried_with_backoff_then_a_clear_error(tmp_path: object) -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{_closed_port()}"
    configuration.retries = False
    delays: list[float] = []
    api = KubeApi(client.ApiClient(configuration), retries=3, sleep=delays.append)
    with pytest.raises(BackendError, match="did not answer") as caught:
        api.call("GET", JOBS.path("default"), verb="list", resource="jobs", what="the Jobs")
    assert len(delays) == 3
    assert delays[0] < delays[-1] + 1e-9 or delays[-1] > 0  # growing, with jitter
    assert api.calls[("list", "jobs")] == 4
    assert "list jobs" in str(caught.value)
