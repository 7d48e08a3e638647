"""The reverse direction: Jobmon's own plugins as jobfleet backends, under `jobfleet run`.

A Jobmon plugin's distributor puts its `worker_node_entry_point` in front of the arguments
`build_worker_node_command` gives it, and starts that. Under jobfleet, that must be jobfleet's
worker-node wrapper with jobfleet's arguments (`job --task-instance-id N --cluster
jobmon_multiprocess --host-url URL`), which reads its task from the host channel. `adapt`
subclasses the Jobmon plugin's classes to say so, and nothing else:

- the distributor takes jobfleet's connection parameters (`host_url=`, `settings=`), starts
  jobfleet's wrapper, and answers triage with a `RemoteExitInfo` (U, not final) where the
  Jobmon plugin raises `RemoteExitInfoNotAvailable`;
- the queue gives the limits Jobmon's queue insists on (`cores`: `(1, <this machine's>)`)
  when the jobfleet queue row has none, and reads jobfleet's memory spellings ("4G");
- the worker node is the Jobmon plugin's own (it reads the ids its distributor set), except
  that exit code 0 is success: Jobmon's worker asks only about failures, jobfleet's wrapper
  asks about every end, and Jobmon's plugins answer E whatever the code.

Only plugins that start a separate process per instance can be adapted: Jobmon's sequential and
dummy plugins run Jobmon's worker inside their own process, against a Jobmon server.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from typing import Any

__all__ = ["adapt"]


def adapt(jobmon_type: str, name: str) -> dict[str, Callable[[], type]]:
    """The jobfleet hooks for Jobmon's plugin `jobmon.plugins.<jobmon_type>`, named `name`."""
    built: dict[str, type] = {}

    def once(role: str, make: Callable[[], type]) -> type:
        if role not in built:
            built[role] = make()
        return built[role]

    def get_cluster_queue_class() -> type:
        return once("queue", lambda: _queue(_plugin(jobmon_type).get_cluster_queue_class()))

    def get_cluster_distributor_class() -> type:
        jobmon_class = _plugin(jobmon_type).get_cluster_distributor_class
        return once("distributor", lambda: _distributor(jobmon_class(), name))

    def get_cluster_worker_node_class() -> type:
        return once(
            "worker_node",
            lambda: _worker_node(_plugin(jobmon_type).get_cluster_worker_node_class()),
        )

    return {
        "get_cluster_queue_class": get_cluster_queue_class,
        "get_cluster_distributor_class": get_cluster_distributor_class,
        "get_cluster_worker_node_class": get_cluster_worker_node_class,
    }


def _plugin(jobmon_type: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"jobmon.plugins.{jobmon_type}")
    except ImportError as exc:
        raise ImportError(
            f"Jobmon's {jobmon_type} plugin is not installed ({exc}): "
            "pip install 'jobfleet-jobmon[jobmon]' jobmon_client"
        ) from exc


def _queue(jobmon_queue: type) -> type:
    from jobfleet.jobmon.units import GIB

    class AdaptedQueue(jobmon_queue):  # type: ignore[misc]
        def __init__(self, queue_id: int, queue_name: str, parameters: dict[str, Any]) -> None:
            given = dict(parameters)
            given.setdefault("cores", (1, os.cpu_count() or 1))
            super().__init__(queue_id, queue_name, given)

        def validate_resources(self, strict: bool = False, **kwargs: Any) -> tuple[bool, str]:
            try:
                ok, message = super().validate_resources(strict=strict, **_jobmon_units(kwargs))
            except (TypeError, ValueError) as exc:
                return False, str(exc)
            return bool(ok), str(message)

        def coerce_resources(self, **kwargs: Any) -> dict[str, Any]:
            coerced = dict(super().coerce_resources(**_jobmon_units(kwargs)))
            if isinstance(coerced.get("memory"), int | float):
                coerced["memory"] = f"{coerced['memory']}G"  # jobfleet reads units, not GiB
            return coerced

    def _jobmon_units(resources: dict[str, Any]) -> dict[str, Any]:
        from jobfleet.core.resources import parse_memory

        converted = dict(resources)
        if converted.get("memory") is not None:
            converted["memory"] = -(-parse_memory(converted["memory"], bare_unit="G") // GIB)
        return converted

    AdaptedQueue.__name__ = AdaptedQueue.__qualname__ = f"Adapted{jobmon_queue.__name__}"
    return AdaptedQueue


def _worker_node(jobmon_worker_node: type) -> type:
    class AdaptedWorkerNode(jobmon_worker_node):  # type: ignore[misc]
        def get_exit_info(self, exit_code: int, error_msg: str) -> tuple[str, str]:
            if exit_code == 0:
                return "D", ""
            state, message = super().get_exit_info(exit_code, error_msg)
            return str(state), str(message)

    AdaptedWorkerNode.__name__ = f"Adapted{jobmon_worker_node.__name__}"
    AdaptedWorkerNode.__qualname__ = AdaptedWorkerNode.__name__
    return AdaptedWorkerNode


def _distributor(jobmon_distributor: type, name: str) -> type:
    from jobfleet.core.cluster_protocol import ClusterDistributor as JobfleetDistributor
    from jobfleet.core.errors import BackendError
    from jobfleet.core.exit_info import RemoteExitInfo
    from jobfleet.core.wrapper import HOST_URL_VARIABLE, entry_point_argv
    from jobmon.core.exceptions import RemoteExitInfoNotAvailable

    class AdaptedDistributor(jobmon_distributor):  # type: ignore[misc]
        def __init__(
            self,
            cluster_name: str,
            *args: Any,
            host_url: str | None = None,
            channel_token: str | None = None,
            settings: Any = None,
            state_dir: Any = None,
            **connection_parameters: Any,
        ) -> None:
            if channel_token:
                raise BackendError(
                    f"{name} runs jobfleet's wrappers on this machine with Jobmon's plugin, "
                    "which cannot give them a channel token: use a file channel."
                )
            try:
                super().__init__(cluster_name, *args, **connection_parameters)
            except ValueError as exc:
                if "worker_node_entry_point" not in str(exc):
                    raise
                # Jobmon's plugin insists on finding its own worker on PATH, though under
                # jobfleet it starts jobfleet's wrapper instead.
                raise BackendError(
                    f"{name}: Jobmon's plugin wants Jobmon's worker_node_entry_point on PATH "
                    "(it is installed beside jobmon_core; activate that environment)."
                ) from exc
            self.host_url = host_url or os.environ.get(HOST_URL_VARIABLE) or None

        @property
        def worker_node_entry_point(self) -> str:
            return shlex.join(entry_point_argv())

        def build_worker_node_command(
            self,
            task_instance_id: int | None = None,
            array_id: int | None = None,
            batch_number: int | None = None,
        ) -> str:
            if not self.host_url:
                raise BackendError(f"{name} has no host channel: pass host_url=")
            base = JobfleetDistributor.build_worker_node_command(
                self, task_instance_id, array_id, batch_number
            )
            return f"{base} --cluster {name} --host-url {shlex.quote(self.host_url)}"

        def get_remote_exit_info(self, distributor_id: str) -> RemoteExitInfo:
            try:
                state, message = super().get_remote_exit_info(distributor_id)
            except RemoteExitInfoNotAvailable:
                return RemoteExitInfo.unknown(
                    f"Jobmon's plugin cannot tell how {distributor_id} ended", finalized=False
                )
            except Exception as exc:
                return RemoteExitInfo.unknown(f"Jobmon's plugin failed to tell: {exc}")
            return RemoteExitInfo(state, message)

    AdaptedDistributor.__name__ = f"Adapted{jobmon_distributor.__name__}"
    AdaptedDistributor.__qualname__ = AdaptedDistributor.__name__
    return AdaptedDistributor
