"""A throwaway single-node Slurm cluster with accounting, entirely inside one directory.

munged, MariaDB, slurmdbd, slurmctld and slurmd run as root from the Debian packages
(`slurm-wlm munge mariadb-server slurmdbd`), with their configs, state, spool, logs, pid files,
munge key and sockets and the MariaDB datadir under `root`, on free loopback ports; nothing is
written to /etc. Clients reach it through `SlurmCluster.env` (SLURM_CONF, PATH).

By hand, for debugging:

    python plugins/slurm/tests/slurm_cluster.py up /tmp/slurm   # prints the env to export
    python plugins/slurm/tests/slurm_cluster.py down /tmp/slurm
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sacct", "sacctmgr", "scancel", "scontrol", "sinfo")
START_TIMEOUT = 60.0
DB_PASSWORD = "jobfleet-slurm-db"  # noqa: S105 - a throwaway server on loopback


class SlurmClusterError(RuntimeError):
    """A daemon of the throwaway cluster failed; the message carries its log tail."""


def search_path() -> str:
    """PATH with the system binary directories that hold the Slurm daemons and clients."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([*parts, *(d for d in SBIN if d not in parts)])


def missing_binaries() -> list[str]:
    """The binaries a cluster needs that are not installed here."""
    needed = (*DAEMONS, "mariadb-install-db", "mariadb", *CLIENTS)
    return [name for name in needed if shutil.which(name, path=search_path()) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid`, so a recycled pid is never mistaken for a daemon."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is as good as gone


def _alive(pid: int, started: str | None) -> bool:
    return started is not None and _start_time(pid) == started


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


class SlurmCluster:
    """One node (hostname localhost), one partition, accounting through slurmdbd and MariaDB."""

    partition = "debug"
    cluster_name = "jobfleet"

    def __init__(
        self,
        cpus: int = 8,
        node_memory_mb: int | None = None,
        max_array_size: int = 1001,
        scheduler_parameters: Sequence[str] = (),
        cloud_nodes: int = 0,
        cloud_cpus: int = 4,
        spare_nodes: int = 0,
        power_saving: Sequence[str] = (),
    ) -> None:
        # More CPUs than the machine has (SlurmdParameters=config_overrides) so that short
        # jobs run side by side; memory is what limits jobs (DefMemPerCPU=256).
        self.cpus = cpus
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.node_memory_mb = node_memory_mb or min(8192, physical)
        self.max_array_size = max_array_size
        # Added to SchedulerParameters, e.g. "bf_min_prio_reserve=4294967294": then a pending
        # job too big to start reserves nothing and smaller jobs behind it start at once
        # (by default backfill holds them back when their --time would overlap its start).
        self.scheduler_parameters = tuple(scheduler_parameters)
        # Elastic Slurm: `cloud_nodes` nodes declared State=CLOUD in the default partition
        # (slurmctld runs the ResumeProgram of `power_saving` for them), and `spare_nodes`
        # ordinary nodes in the partition "spare" that no slurmd serves until a test starts one.
        # Each has its own Port=; nothing starts their slurmd here. `power_saving` holds the
        # slurm.conf lines (ResumeProgram=…, SuspendTime=…); the static node and the spares
        # are excluded from power saving.
        self.cloud_nodes = cloud_nodes
        self.cloud_cpus = cloud_cpus
        self.spare_nodes = spare_nodes
        self.power_saving = tuple(power_saving)
        self.root = Path()
        # name -> (pid, kernel start time); in start order, stopped in reverse.
        self.pids: dict[str, tuple[int, str | None]] = {}
        self.ports: dict[str, int] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.start_seconds = 0.0

    # --- what tests and the plugin use -------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def node_name(self) -> str:
        """Unique per cluster: slurmd names its cgroups after it (/sys/fs/cgroup/*/slurm_<name>),
        so two test sessions side by side do not share job cgroups."""
        return f"node{self.ports.get('slurmd', 0)}"

    def _extra_names(self, kind: str) -> list[str]:
        # Named after this cluster's slurmd port, like `node_name`: unique per cluster.
        port = self.ports.get("slurmd", 0)
        count = sum(1 for key in self.ports if key.startswith(f"{kind}:"))
        return [f"{kind}{port}n{n}" for n in range(1, count + 1)]

    @property
    def cloud_node_names(self) -> list[str]:
        return self._extra_names("cloud")

    @property
    def spare_node_names(self) -> list[str]:
        return self._extra_names("spare")

    @property
    def elastic(self) -> bool:
        return any(":" in key for key in self.ports)

    @property
    def env(self) -> dict[str, str]:
        """Merge into os.environ: Slurm's commands read SLURM_CONF and find munge from it."""
        return {"SLURM_CONF": str(self.conf_path), "PATH": search_path()}

    def log_path(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client against this cluster; raise with its output when it fails."""
        done = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise SlurmClusterError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                                    f"{done.stdout}{done.stderr}")  # fmt: skip
        return done

    # --- start ------------------------------------------------------------------------------

    def start(self, root: Path) -> None:
        """Start every daemon under `root` (an existing, empty directory) and wait until the
        node is idle and sacct answers; on failure stop what was started and raise."""
        self.root = root
        started = time.monotonic()
        try:
            self._start()
            self.start_seconds = time.monotonic() - started
        except BaseException:
            self.stop(remove=False)
            raise

    def _start(self) -> None:
        root = self.root
        # munged insists that everyone may traverse its socket's directories.
        root.chmod(0o711)
        for sub in ("etc", "log", "run", "state", "spool", "db"):
            (root / sub).mkdir(mode=0o755)
        self.ports = {name: free_port() for name in ("mariadb", "slurmdbd", "slurmctld", "slurmd")}
        for kind, count in (("cloud", self.cloud_nodes), ("spare", self.spare_nodes)):
            for n in range(1, count + 1):
                self.ports[f"{kind}:{n}"] = free_port()
        # The one slow step (≈ 2 s), run while munged starts.
        with open(self.log_path("mariadb-install-db"), "wb") as log:
            install = subprocess.Popen(
                ["mariadb-install-db", "--no-defaults", f"--datadir={root / 'db'}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--skip-name-resolve"],
                stdout=log, stderr=subprocess.STDOUT, env=self._daemon_env(),
            )  # fmt: skip
        self._start_munged()
        self._write_configs()
        if install.wait(timeout=START_TIMEOUT) != 0:
            raise SlurmClusterError(
                f"mariadb-install-db failed:\n{_tail(self.log_path('mariadb-install-db'))}"
            )
        self._start_mariadb()
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait("slurmdbd", lambda: self._answers(self.ports["slurmdbd"]))
        self._wait(
            "slurmdbd",
            lambda: self._quiet("sacctmgr", "-i", "add", "cluster", self.cluster_name),
            what="sacctmgr to add the cluster",
        )
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf_path)])
        self._wait("slurmctld", lambda: self._quiet("scontrol", "ping"), what="scontrol ping")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node_name, "-f", str(self.conf_path)])
        self._wait("slurmd",
                   lambda: self._output("sinfo", "-h", "-n", self.node_name, "-o", "%T") == "idle",
                   what="the node to be idle")  # fmt: skip
        self._wait("slurmdbd", lambda: self._quiet("sacct", "-n", "-X"), what="sacct to answer")

    def _start_munged(self) -> None:
        key = self.root / "etc" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        run = self.root / "run"
        socket_path = run / "munge.socket"
        self._spawn("munged", [
            "munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
            f"--pid-file={run / 'munged.pid'}", f"--seed-file={run / 'munged.seed'}",
            f"--log-file={self.log_path('munged')}",
        ])  # fmt: skip
        self._wait("munged", socket_path.exists, what="its socket")

    def _start_mariadb(self) -> None:
        socket_path = self.root / "run" / "mariadb.socket"
        self._spawn("mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={self.root / 'db'}", "--user=root",
            f"--socket={socket_path}", f"--port={self.ports['mariadb']}",
            "--bind-address=127.0.0.1", f"--pid-file={self.root / 'run' / 'mariadbd.pid'}",
            f"--log-error={self.log_path('mariadbd')}", "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
            "--innodb-lock-wait-timeout=900", "--skip-log-bin",
        ])  # fmt: skip
        self._wait("mariadbd", socket_path.exists, what="its socket")
        # slurmdbd connects over TCP as 'slurm'@'127.0.0.1' (with or without name resolution
        # it may also look like 'localhost'): create both.
        grants = "".join(
            f"CREATE USER 'slurm'@'{host}' IDENTIFIED BY '{DB_PASSWORD}';"
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';"
            for host in ("localhost", "127.0.0.1")
        )
        self._wait(
            "mariadbd",
            lambda: self._quiet("mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot",
                                "-e", grants),
            what="the slurm database user",
        )  # fmt: skip

    # --- configs ----------------------------------------------------------------------------

    def _write_configs(self) -> None:
        root, etc = self.root, self.root / "etc"
        auth = f"AuthInfo=socket={root / 'run' / 'munge.socket'}"
        dbd = etc / "slurmdbd.conf"
        dbd.touch(mode=0o600)  # slurmdbd refuses a config others can read
        dbd.write_text(_lines(
            auth,
            "AuthType=auth/munge",
            "DbdHost=localhost",
            f"DbdPort={self.ports['slurmdbd']}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={self.log_path('slurmdbd')}",
            f"PidFile={root / 'run' / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.ports['mariadb']}",
            "StorageUser=slurm",
            f"StoragePass={DB_PASSWORD}",
            "StorageLoc=slurm_acct_db",
        ))  # fmt: skip
        (etc / "cgroup.conf").write_text(_lines(
            "CgroupPlugin=cgroup/v1",
            "ConstrainRAMSpace=yes",
        ))  # fmt: skip
        partition_nodes = ",".join([self.node_name, *self.cloud_node_names])
        self.conf_path.write_text(_lines(
            f"ClusterName={self.cluster_name}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ports['slurmctld']}",
            f"SlurmdPort={self.ports['slurmd']}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            auth,
            f"StateSaveLocation={root / 'state'}",
            *self._slurmd_paths(),
            f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
            f"SlurmctldLogFile={self.log_path('slurmctld')}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "MpiDefault=none",
            "ProctrackType=proctrack/cgroup",
            "TaskPlugin=task/cgroup",
            "JobAcctGatherType=jobacct_gather/cgroup",
            "JobAcctGatherFrequency=task=1",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost",
            f"AccountingStoragePort={self.ports['slurmdbd']}",
            # How a client finds munge for its connection to slurmdbd (sacct, sacctmgr, and
            # slurmctld itself): Slurm reads the socket from here, not from AuthInfo.
            f"AccountingStoragePass={root / 'run' / 'munge.socket'}",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=256",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "SchedulerParameters="
            + ",".join(["batch_sched_delay=0", "sched_min_interval=0", "bf_interval=1",
                        *self.scheduler_parameters]),
            f"MaxArraySize={self.max_array_size}",
            "KillWait=5",
            f"NodeName={self.node_name} NodeHostname=localhost NodeAddr=127.0.0.1 "
            f"CPUs={self.cpus} RealMemory={self.node_memory_mb} State=UNKNOWN",
            *self._elastic_lines(),
            f"PartitionName={self.partition} Nodes={partition_nodes} Default=YES "
            "MaxTime=INFINITE State=UP",
            *([f"PartitionName=spare Nodes={','.join(self.spare_node_names)} MaxTime=INFINITE "
               "State=UP"] if self.spare_nodes else []),
        ))  # fmt: skip

    def _slurmd_paths(self) -> list[str]:
        run, spool = self.root / "run", self.root / "spool"
        if not self.elastic:
            return [f"SlurmdSpoolDir={spool / 'slurmd'}", f"SlurmdPidFile={run / 'slurmd.pid'}",
                    f"SlurmdLogFile={self.log_path('slurmd')}"]  # fmt: skip
        # Several slurmd on this host: each its own spool, pid and log file (%n: node name).
        return [f"SlurmdSpoolDir={spool / 'slurmd-%n'}", f"SlurmdPidFile={run / 'slurmd-%n.pid'}",
                f"SlurmdLogFile={self.root / 'log' / 'slurmd-%n.log'}"]  # fmt: skip

    def _elastic_lines(self) -> list[str]:
        """The cloud and spare nodes, each with its own port, and the power-saving lines."""
        lines = []
        memory = min(self.node_memory_mb, 2048)
        for kind in ("cloud", "spare"):
            for n, name in enumerate(self._extra_names(kind), start=1):
                lines.append(
                    f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 "
                    f"Port={self.ports[f'{kind}:{n}']} CPUs={self.cloud_cpus} "
                    f"RealMemory={memory} State={'CLOUD' if kind == 'cloud' else 'UNKNOWN'}"
                )
        if self.power_saving:
            excluded = ",".join([self.node_name, *self.spare_node_names])
            lines += [*self.power_saving, f"SuspendExcNodes={excluded}",
                      "PrivateData=cloud"]  # fmt: skip
        return lines

    # --- processes --------------------------------------------------------------------------

    def _daemon_env(self) -> dict[str, str]:
        # Every daemon, and through slurmd every job, carries SLURM_CONF: how stop() finds
        # strays (slurmstepd, job processes) that belong to this cluster and no other.
        return {**os.environ, **self.env}

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_path(f"{name}.out"), "wb") as out:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self._daemon_env(), start_new_session=True,
            )  # fmt: skip
        self._children[name] = child
        self.pids[name] = (child.pid, _start_time(child.pid))
        state = {"pids": self.pids, "ports": self.ports}
        (self.root / "pids.json").write_text(json.dumps(state))

    def _wait(self, name: str, ready: Callable[[], object], what: str = "it to answer") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            child = self._children.get(name)
            if child is not None and child.poll() is not None:
                raise self._failure(name, f"exited with {child.returncode}")
            if time.monotonic() > deadline:
                raise self._failure(name, f"not ready after {START_TIMEOUT:g} s ({what})")
            time.sleep(0.05)

    def _failure(self, name: str, problem: str) -> SlurmClusterError:
        logs = "".join(
            f"\n--- {path.name} ---\n{_tail(path)}"
            for path in self._logs_of(name)
            if path.exists() and path.stat().st_size
        )
        return SlurmClusterError(f"{name} {problem}; its log:{logs or ' (empty)'}")

    def _logs_of(self, name: str) -> list[Path]:
        paths = [self.log_path(name), self.log_path(f"{name}.out")]
        if name == "slurmd" and self.elastic:  # SlurmdLogFile holds %n
            paths.insert(0, self.log_path(f"slurmd-{self.node_name}"))
        return paths

    def _answers(self, port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _quiet(self, *argv: str) -> bool:
        done = subprocess.run(argv, env=self._daemon_env(), capture_output=True, timeout=30)
        return done.returncode == 0

    def _output(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self._daemon_env(), capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        return done.stdout.strip()

    # --- stop -------------------------------------------------------------------------------

    @classmethod
    def attach(cls, root: Path) -> SlurmCluster:
        """The cluster that `start` left in `root` (for `down`, and to sweep killed sessions)."""
        cluster = cls()
        cluster.root = root
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((root / "pids.json").read_text())
            cluster.pids = {name: (pid, started) for name, (pid, started) in state["pids"].items()}
            cluster.ports = state["ports"]
        return cluster

    @property
    def node_names(self) -> list[str]:
        """Every node of the cluster: the static one, the cloud and the spare ones."""
        return [self.node_name, *self.cloud_node_names, *self.spare_node_names]

    def stop(self, remove: bool = True) -> None:
        """Cancel every job, stop every daemon (TERM, then KILL), remove the directory."""
        slurmctld = self.pids.get("slurmctld")
        if slurmctld and _alive(*slurmctld) and self.pids.get("slurmd"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["scancel", "--user", "root"], env=self._daemon_env(),
                               capture_output=True, timeout=10)  # fmt: skip
                deadline = time.monotonic() + 10
                while self._output("squeue", "-h", "-o", "%i") and time.monotonic() < deadline:
                    time.sleep(0.1)
        for name in reversed(list(self.pids)):
            self._terminate(name, *self.pids[name])
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._kill_strays()
        if remove and self.root != Path():
            shutil.rmtree(self.root, ignore_errors=True)

    def _terminate(self, name: str, pid: int, started: str | None) -> None:
        if not _alive(pid, started):
            return
        child = self._children.get(name)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                return
            if child is None and not _alive(pid, started):
                return
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        if child is not None:
            child.wait(timeout=10)

    def _strays(self) -> set[int]:
        """Processes left of this cluster: whatever carries its SLURM_CONF (slurmstepd and,
        through sbatch's default --export=ALL, most jobs) or sits in its job cgroups."""
        marker = f"SLURM_CONF={self.conf_path}".encode()
        found = set()
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.add(int(entry.name))
        for node in self.node_names:
            for procs in Path("/sys/fs/cgroup").glob(f"*/slurm_{node}/**/cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(pid) for pid in procs.read_text().split())
        found -= {os.getpid(), os.getppid()}
        return {pid for pid in found if _start_time(pid) is not None}  # zombies are gone

    def _kill_strays(self) -> None:
        """KILL the strays, then remove the job cgroups (named after the node, so unique to
        this cluster; a cgroup directory goes with rmdir once its processes are gone)."""
        tops = [
            top
            for node in self.node_names
            for top in Path("/sys/fs/cgroup").glob(f"*/slurm_{node}")
        ]
        for node in self.node_names:
            for state in Path("/sys/fs/cgroup/freezer").glob(f"slurm_{node}/**/freezer.state"):
                with contextlib.suppress(OSError):
                    state.write_text("THAWED")  # a frozen process would never see its KILL
        deadline = time.monotonic() + 10
        while True:
            strays = self._strays()
            for pid in strays:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for top in tops:
                for cgroup in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        cgroup.rmdir()
            if not strays and not any(top.exists() for top in tops):
                return
            if time.monotonic() > deadline:
                return  # best effort: a later session's sweep tries again
            time.sleep(0.1)


def write_power_config(cluster: SlurmCluster) -> Path:
    """`jobfleet-power.toml` beside the cluster's slurm.conf: the power programs call the local
    provisioner (local_provisioner.py beside this file) for the cloud nodes, one node type
    "cloud" of the cloud nodes' size; its log in the cluster's log directory."""
    memory_mb = min(cluster.node_memory_mb, 2048)
    path = cluster.conf_path.parent / "jobfleet-power.toml"
    path.write_text(_lines(
        'provisioner = "local_provisioner:LocalSlurmdProvisioner"',
        f"python_path = [{json.dumps(str(Path(__file__).resolve().parent))}]",
        f"log_file = {json.dumps(str(cluster.log_path('jobfleet-power')))}",
        'node_type = "cloud"',
        "attempts = 2",
        "",
        "[parameters]",
        f"state_dir = {json.dumps(str(cluster.root / 'local-nodes'))}",
        "",
        "[parameters.node_types.cloud]",
        f"names = {json.dumps(cluster.cloud_node_names)}",
        f"cores = {cluster.cloud_cpus}",
        f"memory = {memory_mb * 2**20}",
        f"disk = {10 * 2**30}",
    ))  # fmt: skip
    return path


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(f"usage: {Path(__file__).name} up|down DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "down":
        SlurmCluster.attach(root).stop()
        return 0
    root.mkdir(parents=True, exist_ok=False)
    cluster = SlurmCluster()
    cluster.start(root)
    print(f"# up in {cluster.start_seconds:.1f} s; logs in {root / 'log'}", file=sys.stderr)
    for name, value in cluster.env.items():
        print(f"export {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
