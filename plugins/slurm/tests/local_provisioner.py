"""A provisioner whose nodes are extra `slurmd -N NAME` daemons on this machine (test only).

Slurm runs several slurmd on one host when each node has its own `Port=` and spool, pid and log
files (`%n` in their paths); a node declared `State=CLOUD` registers as freshly powered up when
its slurmd starts with `-b`. This provisioner starts such daemons for named nodes of a pool
(the names slurm.conf declares), stops them by PID (checked against the process's start time, so
a recycled PID is never signalled) and keeps one JSON file per node under `state_dir`. It serves
the elastic Slurm tests (as what `jobfleet-slurm-resume` calls) and runs the kit's
ProvisionerTests; it is not product code: a real cluster's nodes are machines.

Parameters (keyword arguments, or `[parameters]` of jobfleet-power.toml)::

    state_dir = "/tmp/x/local-nodes"       # one JSON file per running node
    slurm_conf = "/tmp/x/etc/slurm.conf"   # default: $SLURM_CONF
    slurmd = "/usr/sbin/slurmd"            # default: found on PATH or in /usr/sbin
    [parameters.node_types.cloud]          # one table per node type
    names = ["cloud1", "cloud2"]           # the Slurm nodes of this type
    cores = 4
    memory = 1073741824                    # bytes
    disk = 10737418240                     # bytes
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobfleet.core.scaling import ManagedNodesNotSupported, Node, NodeType, Shape

START_CHECK = 1.0  # seconds a new slurmd must stay up to count as started
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class LocalNodeType:
    names: tuple[str, ...]
    cores: float
    memory: int
    disk: int


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


class LocalSlurmdProvisioner:
    """Nodes are slurmd daemons on this host; see the module's docstring."""

    def __init__(
        self,
        cluster_name: str,
        *,
        settings: Any = None,
        state_dir: str | None = None,
        node_types: Mapping[str, Mapping[str, Any]] | None = None,
        slurm_conf: str | None = None,
        slurmd: str | None = None,
    ) -> None:
        self.cluster_name = cluster_name
        base = Path(state_dir or Path(tempfile.gettempdir()) / "jobfleet-local-slurmd")
        self.state_dir = base / cluster_name
        self.slurm_conf = slurm_conf or os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
        self.slurmd = slurmd or shutil.which("slurmd") or shutil.which(
            "slurmd", path="/usr/sbin:/usr/bin:/sbin"
        ) or "slurmd"  # fmt: skip
        self.types = {
            name: LocalNodeType(
                names=tuple(spec["names"]),
                cores=float(spec.get("cores", 1)),
                memory=int(spec.get("memory", 1 << 30)),
                disk=int(spec.get("disk", 1 << 30)),
            )
            for name, spec in (node_types or {}).items()
        }
        self.node_types = [NodeType(name) for name in self.types]

    # --- launching ---------------------------------------------------------------------------

    def add_nodes(
        self,
        node_type: str,
        count: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        """Up to `count` nodes of the type's pool that are not running yet."""
        if preemptible:
            return []  # no spot capacity on this machine: the caller falls back
        running = {node.name for node in self.get_provisioned_workers()}
        free = [name for name in self._type(node_type).names if name not in running]
        return self.add_named_nodes(node_type, free[:count])

    def add_named_nodes(
        self,
        node_type: str,
        names: Sequence[str],
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        """Start `slurmd -D -b -N NAME` for each name (running ones are returned as they are)."""
        spec = self._type(node_type)
        strangers = [name for name in names if name not in spec.names]
        if strangers:
            raise ValueError(f"{', '.join(strangers)} are not nodes of type {node_type!r} "
                             f"(its pool: {', '.join(spec.names)})")  # fmt: skip
        if preemptible:
            return []
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running = {node.name: node for node in self.get_provisioned_workers()}
        launched = []
        for name in names:
            if name in running:
                launched.append(running[name])
                continue
            launched.append(self._start(name, node_type))
        return launched

    def _start(self, name: str, node_type: str) -> Node:
        out = self.state_dir / f"{name}.out"
        with open(out, "ab") as log:
            # A session of its own: slurmctld kills the resume program's process group when
            # the program ends, and the node must outlive it.
            child = subprocess.Popen(
                [self.slurmd, "-D", "-b", "-N", name, "-f", self.slurm_conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "SLURM_CONF": self.slurm_conf}, start_new_session=True,
            )  # fmt: skip
        launched_at = datetime.now(UTC)
        record = {"pid": child.pid, "started": _start_time(child.pid), "node_type": node_type,
                  "launched_at": launched_at.isoformat()}  # fmt: skip
        (self.state_dir / f"{name}.json").write_text(json.dumps(record))
        deadline = time.monotonic() + START_CHECK
        while time.monotonic() < deadline:
            if child.poll() is not None:
                (self.state_dir / f"{name}.json").unlink(missing_ok=True)
                tail = out.read_text(errors="replace")[-500:].strip()
                raise RuntimeError(f"slurmd -N {name} exited with {child.returncode}: {tail}")
            time.sleep(0.05)
        return self._node(name, record)

    def add_managed_nodes(
        self,
        node_type: str,
        min_nodes: int,
        max_nodes: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> None:
        raise ManagedNodesNotSupported("local slurmd nodes do not scale themselves")

    # --- listing and terminating ------------------------------------------------------------

    def get_provisioned_workers(
        self, node_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        if preemptible:
            return []
        nodes = []
        for path in sorted(self.state_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if _start_time(record["pid"]) != record["started"]:
                    path.unlink(missing_ok=True)  # died or was stopped behind our back
                    continue
                if node_type is None or record["node_type"] == node_type:
                    nodes.append(self._node(path.stem, record))
        return nodes

    def terminate_nodes(self, nodes: Sequence[Node]) -> None:
        """TERM each node's slurmd, KILL those that linger; unknown nodes are already gone."""
        stopping = []
        for node in nodes:
            path = self.state_dir / f"{node.name}.json"
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pid, started = record["pid"], record["started"]
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                stopping.append((pid, started))
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(_start_time(p) == s for p, s in stopping):
            time.sleep(0.05)
        for pid, started in stopping:
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        for node in nodes:
            (self.state_dir / f"{node.name}.json").unlink(missing_ok=True)

    def destroy_cluster(self) -> None:
        self.terminate_nodes(self.get_provisioned_workers())

    # --- shapes ----------------------------------------------------------------------------

    def get_node_shape(self, node_type: str, preemptible: bool = False) -> Shape:
        spec = self._type(node_type)
        return Shape(wall_time=math.inf, memory=spec.memory, cores=spec.cores, disk=spec.disk,
                     preemptible=preemptible)  # fmt: skip

    def retry_predicate(self, error: BaseException) -> bool:
        return isinstance(error, BlockingIOError)  # fork refused for a moment (EAGAIN)

    # --- helpers ---------------------------------------------------------------------------

    def _type(self, node_type: str) -> LocalNodeType:
        try:
            return self.types[node_type]
        except KeyError:
            raise ValueError(f"unknown node type {node_type!r}; known: "
                             f"{', '.join(self.types) or 'none'}") from None  # fmt: skip

    def _node(self, name: str, record: Mapping[str, Any]) -> Node:
        return Node(
            name=name, node_type=record["node_type"], preemptible=False,
            private_ip="127.0.0.1", launched_at=datetime.fromisoformat(record["launched_at"]),
            tags={"pid": str(record["pid"])},
        )  # fmt: skip
