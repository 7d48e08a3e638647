"""The dummy distributor: remembers what was submitted and when, and answers from that."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.exit_info import ExitReason, ExitRecord, RemoteExitInfo
from jobfleet.plugins.dummy.settings import DummySettings


@dataclass(slots=True)
class _Instance:
    submitted_at: float
    fails: bool
    killed: bool = False


class DummyDistributor(ClusterDistributor):
    """Runs nothing. An instance is running for `report_delay` seconds, then done (or E)."""

    runs_commands: ClassVar[bool] = False
    """No command runs, so no worker node will ever report: a host engine that learns of its
    tasks' ends only from its own worker (Jobmon, through jobfleet-jobmon) reports them
    itself, as Jobmon's own dummy distributor does."""

    def __init__(
        self,
        cluster_name: str,
        *args: Any,
        settings: DummySettings | None = None,
        **connection_parameters: Any,
    ) -> None:
        self.cluster_name = cluster_name
        self.settings = settings or DummySettings()
        # A fresh prefix per distributor, so ids never repeat across restarts of a host.
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()

    @property
    def worker_node_entry_point(self) -> str:
        return "jobfleet-worker-node"

    def start(self) -> None:
        """Nothing to connect to."""

    def stop(self) -> None:
        """Nothing runs, so nothing is left behind; forget the instances."""
        with self._lock:
            self._instances.clear()

    def submit_to_batch_distributor(
        self, command: str, name: str, requested_resources: dict[str, Any]
    ) -> str:
        with self._lock:
            return self._submit_locked()

    def submit_array_to_batch_distributor(
        self,
        command: str,
        name: str,
        requested_resources: dict[str, Any],
        array_length: int,
    ) -> dict[int, str]:
        if array_length < 1:
            raise ValueError(f"array_length must be at least 1, not {array_length}")
        with self._lock:
            return {step: self._submit_locked() for step in range(array_length)}

    def _submit_locked(self) -> str:
        number = next(self._counter)
        every = self.settings.fail_every
        distributor_id = f"{self._prefix}-{number}"
        self._instances[distributor_id] = _Instance(
            submitted_at=time.monotonic(), fails=every > 0 and number % every == 0
        )
        return distributor_id

    def _running(self, instance: _Instance, now: float) -> bool:
        return not instance.killed and now - instance.submitted_at < self.settings.report_delay

    def get_submitted_or_running(self, distributor_ids: list[str]) -> set[str]:
        now = time.monotonic()
        with self._lock:
            return {
                distributor_id
                for distributor_id in distributor_ids
                if (instance := self._instances.get(distributor_id))
                and self._running(instance, now)
            }

    def terminate_task_instances(self, distributor_ids: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for distributor_id in distributor_ids:
                instance = self._instances.get(distributor_id)
                # Only a still-running instance can be killed; a finished one keeps its outcome.
                if instance and self._running(instance, now):
                    instance.killed = True

    def get_queueing_errors(self, distributor_ids: list[str]) -> dict[str, str]:
        return {}

    def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
        with self._lock:
            instance = self._instances.get(distributor_id)
            if instance is None:
                return RemoteExitInfo.unknown(f"the dummy backend never saw {distributor_id!r}")
            if instance.killed:
                return _info(ExitReason.CANCELLED, None, "killed on request")
            if self._running(instance, time.monotonic()):
                return RemoteExitInfo.unknown("still running", finalized=False)
            if instance.fails:
                return _info(
                    ExitReason.FAILED,
                    1,
                    f"failed on purpose (fail_every={self.settings.fail_every})",
                )
            return _info(ExitReason.COMPLETED, 0, "done without running anything")


def _info(reason: ExitReason, exit_code: int | None, message: str) -> RemoteExitInfo:
    record = ExitRecord(reason=reason, exit_code=exit_code, raw_state=reason.value, message=message)
    return RemoteExitInfo(reason.default_error_state, message, record=record)
