"""A reusable `ClusterDistributor` that backends subclass.

`BaseClusterDistributor` holds what every distributor that starts the jobfleet worker-node
wrapper needs, so that a new backend writes only what is its own (submission, status, kills,
its scheduler's exit information):

- the host channel's address (`host_url=`, else `$JOBFLEET_HOST_URL`), the token of an http
  channel (`channel_token=`, else `$JOBFLEET_CHANNEL_TOKEN`: put it in the wrapper's
  environment, never on its command line) and the settings object;
- `worker_node_entry_point` and the wrapper's full command line (`wrapper_argv`), as an argv
  list that never passes through a shell, with `--cluster` and `--host-url` appended to the
  worker-node arguments the host built (Jobmon's arguments-only convention);
- the `array_length` check;
- packing (`jobfleet.core.packing`): `submit_packed_array`, `packed_submitted_or_running`,
  `packed_queueing_errors`, `packed_exit_info` and `terminate_packed` wrap a backend's array
  submission and its answers per job, so that a request with `pack:` runs several instances
  per array element;
- `state_dir`: a private directory of the host's (0700) that survives `jobfleet run --resume`,
  for what a backend must remember across a host crash (a framework id, the ids it launched).

    class MyDistributor(BaseClusterDistributor):
        cluster_type = "mine"
        settings_class = MySettings

        def submit_to_batch_distributor(self, command, name, requested_resources):
            argv = self.wrapper_argv(command)
            ...

When the wrapper's final report is missing, map how its process ended with
`jobfleet.core.wrapper.exit_info_from_wrapper`, the mapping every backend shares.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.errors import BackendError
from jobfleet.core.exit_info import RemoteExitInfo
from jobfleet.core.packing import Packer
from jobfleet.core.wrapper import (
    CHANNEL_TOKEN_VARIABLE,
    DEFAULT_KILL_GRACE,
    HOST_URL_VARIABLE,
    entry_point_argv,
)

__all__ = ["BaseClusterDistributor"]


class BaseClusterDistributor(ClusterDistributor):
    """Settings, host channel and wrapper command line, shared by every backend."""

    cluster_type: ClassVar[str]
    """The backend's name (its entry point's): the wrapper's `--cluster`, which tells it whose
    worker node to load."""

    settings_class: ClassVar[type[Any] | None] = None
    """The backend's settings dataclass; an instance with its defaults is used when the host
    passes no `settings=`."""

    needs_network_channel: ClassVar[bool] = False
    """True for a backend whose nodes share no file system with the host (Kubernetes): the
    host then serves the run's channel over HTTP unless told otherwise (`jobfleet run
    --channel`), and passes the run's token as `channel_token=`."""

    def __init__(
        self,
        cluster_name: str,
        *args: Any,
        settings: Any = None,
        host_url: str | None = None,
        channel_token: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        **connection_parameters: Any,
    ) -> None:
        self.cluster_name = cluster_name
        if settings is None and self.settings_class is not None:
            settings = self.settings_class()
        self.settings = settings
        self.host_url = host_url or os.environ.get(HOST_URL_VARIABLE) or None
        self.channel_token = channel_token or os.environ.get(CHANNEL_TOKEN_VARIABLE) or None
        """The run's token of an http channel (None for a file channel): the wrapper needs it
        in its environment as `$JOBFLEET_CHANNEL_TOKEN` (or in a file named by
        `$JOBFLEET_CHANNEL_TOKEN_FILE`); it must never appear on a command line or in logs."""
        self.state_dir = Path(state_dir) if state_dir is not None else None
        """A directory of the host's, private to this run's distributor (0700, made by the
        host), kept across `jobfleet run --resume`: a backend stores there what it needs to take
        up its work after a host crash (Mesos: the framework id and the tasks it launched).
        None when the host keeps no state (a backend then starts afresh each time); write its
        files atomically (a temporary file renamed over) and 0600, since it may hold ids that
        give control over the run's tasks."""
        self.connection_parameters = connection_parameters
        self.packer = Packer(self._open_member_channel)

    # -- packing (jobfleet.core.packing) -------------------------------------------------------

    def _open_member_channel(self) -> Any:
        """The run's channel, as a client: member kills go through it (jobfleet.core.packing)."""
        url = self.require_host_url()
        if url.lower().startswith(("http://", "https://")):
            from jobfleet.core.channel.http import HttpChannel

            # The host gave the token as a parameter: it may not be in this environment.
            return HttpChannel(url, token=self.channel_token)
        from jobfleet.core.channel import open_channel

        return open_channel(url)

    def submit_packed_array(
        self,
        command: str,
        requested_resources: Mapping[str, Any],
        array_length: int,
        submit_elements: Callable[[str, dict[str, Any], int], Mapping[int, str]],
    ) -> dict[int, str] | None:
        """When the request asks for packing: submit the elements through `submit_elements`
        (the backend's array submission: command, resources, length → element ids) and map
        each step to its member's id. None when there is nothing to pack: submit as usual."""
        # The wrappers' grace before SIGKILL, where the backend's settings set it.
        grace = getattr(self.settings, "kill_grace", None)
        return self.packer.submit(
            command,
            requested_resources,
            array_length,
            submit_elements,
            kill_grace=float(grace) if isinstance(grace, int | float) else DEFAULT_KILL_GRACE,
        )

    def packed_submitted_or_running(
        self, distributor_ids: Iterable[str], query: Callable[[list[str]], set[str]]
    ) -> set[str]:
        """`query` (the backend's answer for jobs) answered for members too."""
        return self.packer.submitted_or_running(distributor_ids, query)

    def packed_queueing_errors(
        self, distributor_ids: Iterable[str], query: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, str]:
        """`query` (the backend's queueing errors of jobs) answered for members too."""
        return self.packer.queueing_errors(distributor_ids, query)

    def packed_exit_info(
        self, distributor_id: str, job_info: Callable[[str], RemoteExitInfo]
    ) -> RemoteExitInfo:
        """`job_info` (the backend's exit info of a job) answered for members too."""
        return self.packer.exit_info(distributor_id, job_info)

    def terminate_packed(
        self,
        distributor_ids: Iterable[str],
        kill_jobs: Callable[[list[str]], None],
        job_active: Callable[[str], bool],
    ) -> None:
        """Members killed through the channel, jobs (and wholly killed elements) by `kill_jobs`."""
        self.packer.terminate(distributor_ids, kill_jobs, job_active)

    @property
    def worker_node_entry_point(self) -> str:
        return shlex.join(entry_point_argv())

    def wrapper_argv(self, command: str) -> list[str]:
        """The whole command that runs the wrapper for `command`, the worker-node arguments of
        `build_worker_node_command` (built from integers; split here, never given to a shell)."""
        return [
            *entry_point_argv(),
            *shlex.split(command),
            "--cluster",
            self.cluster_type,
            "--host-url",
            self.require_host_url(),
            *self.wrapper_options(),
        ]

    def wrapper_options(self) -> list[str]:
        """Extra wrapper options this backend passes (e.g. `--kill-grace`, `--cgroup`)."""
        return []

    def require_host_url(self) -> str:
        """The host channel's address; a clear error when the host gave none."""
        if not self.host_url:
            raise BackendError(
                f"The {self.cluster_type} distributor has no host channel to give its worker "
                f"nodes: pass host_url= (or set {HOST_URL_VARIABLE})."
            )
        return self.host_url

    @staticmethod
    def check_array_length(array_length: int) -> None:
        """Refuse an array that is empty (or not a count at all)."""
        if isinstance(array_length, bool) or not isinstance(array_length, int) or array_length < 1:
            raise ValueError(
                f"array_length must be a whole number, 1 or more, not {array_length!r}"
            )
