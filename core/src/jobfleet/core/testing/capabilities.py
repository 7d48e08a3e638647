"""What a backend declares it cannot do, so the kit skips (and says so) instead of failing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Capabilities:
    """Flags a backend's conformance tests set; every flag defaults to the full contract."""

    runs_commands: bool = True
    """Submitted commands really run through `jobfleet-worker-node` (the dummy runs nothing).
    Every test that runs a command needs it."""
    arrays: bool = True
    """`submit_array_to_batch_distributor` is implemented (not the NotImplementedError default)."""
    local_processes: bool = True
    """Tasks run on the kit's machine, in its process namespace and file system: the kit can
    signal a wrapper by the `wrapper_pid` of its RUNNING event and test file locks its tasks
    hold (the "wrapper SIGKILLed is U" and "no process escapes a kill or stop()" tests)."""
    shared_filesystem: bool = True
    """Tasks read and write the kit's temporary directory, so they can meet in files there
    (the concurrency test counts running tasks that way)."""
    limits_memory: bool = True
    """A task over its spec's memory limit is killed and reported `Z` with reason `oom`."""
    limits_runtime: bool = True
    """A task over its spec's runtime limit is killed and reported `Z` with reason `timeout`."""

    def require(self, flag: str, backend: str) -> None:
        """Skip the calling test, naming the flag, when the backend declares it cannot."""
        if not getattr(self, flag):
            pytest.skip(
                f"the {backend} backend declares it cannot: {flag} (Capabilities.{flag}=False)"
            )
