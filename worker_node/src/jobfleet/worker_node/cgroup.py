"""Per-task memory cgroups: a real memory limit, a true peak, and a way to kill everything a task
started.

A task put in its own cgroup cannot hide from us: every process it forks is born in the same
cgroup, whatever session, process group or parent it ends up with, and the kernel keeps the peak
memory of the whole group (`memory.max_usage_in_bytes`) without sampling gaps and without
counting shared pages twice.

cgroup v1 (the `memory` controller) is created and written here. cgroup v2 files are only read, for
the case where a backend (Slurm, Kubernetes) already put the whole job in a cgroup of its own:
see `current_memory_cgroup()` and `TaskCgroup.open()`.

Nothing here raises because cgroups are "not possible here" (no controller, read-only mount, not
root): `TaskCgroup.try_create()` says why, and the wrapper falls back to sampling.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

from jobfleet.core.frozen import Frozen

# Paths are plain strings (os.path), and no dataclasses: pathlib costs the wrapper
# urllib.parse and ipaddress, and this module is imported before every task.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["JOIN_FAILED_EXIT_CODE", "CgroupInfo", "TaskCgroup", "current_memory_cgroup"]

# A limit at or above this means "no limit": v1 prints PAGE_COUNTER_MAX * page size
# (9223372036854771712), v2 prints "max".
_UNLIMITED = 1 << 62

# Exit status of `TaskCgroup.wrap_argv()` when the command could not join its cgroup. Running it
# anyway would silently run it without its memory limit.
JOIN_FAILED_EXIT_CODE = 125

_NAME_PREFIX = "jobfleet-"
_NAME_MAX = 48
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class CgroupInfo(Frozen):
    """The memory cgroup a process is in (`path`, a directory).

    `memory_limit` is the effective limit in bytes: the smallest limit of the cgroup and its
    ancestors, which is what the OOM killer enforces; None when there is none.
    """

    _fields = ("version", "path", "memory_limit")
    __slots__ = _fields

    version: int
    path: str
    memory_limit: int | None

    def __init__(self, version: int, path: str, memory_limit: int | None) -> None:
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "memory_limit", memory_limit)

    @property
    def has_limit(self) -> bool:
        return self.memory_limit is not None


def current_memory_cgroup(pid: int | str = "self") -> CgroupInfo | None:
    """Describe the memory cgroup of `pid` (this process by default); None without one.

    A v1 memory controller wins over v2 because that is the one enforcing limits on hybrid
    machines. On v2 a cgroup counts only when its memory controller is enabled (it has
    `memory.current`; the root cgroup never has).
    """
    path = _memory_cgroup_dir(1, pid)
    if path is not None:
        return CgroupInfo(1, path, _v1_effective_limit(path))
    path = _memory_cgroup_dir(2, pid)
    if path is not None and os.path.exists(os.path.join(path, "memory.current")):
        return CgroupInfo(2, path, _v2_effective_limit(path))
    return None


class TaskCgroup:
    """One task's memory cgroup.

    Create one with `try_create()` / `create()` (v1, owned: `remove()` kills what is left and
    deletes it), or look at an existing one with `open()` (v1 or v2, not owned: never removed).
    The wrapper's own process is never signalled, so `kill_all()` is safe on a cgroup it shares.
    """

    def __init__(
        self, path: str | os.PathLike[str], version: int = 1, *, owned: bool = False
    ) -> None:
        self.path: str = os.fspath(path)
        self.version = version
        self.owned = owned
        # Whether memory+swap is limited too; without it a limited task could spill into swap.
        self.swap_limited = False

    def __repr__(self) -> str:
        return f"TaskCgroup({self.path!r}, version={self.version}, owned={self.owned})"

    # -- creating and opening ---------------------------------------------------------------------

    @classmethod
    def try_create(cls, name: str, memory_limit: int | None) -> tuple[TaskCgroup | None, str]:
        """Create a v1 memory cgroup for one task under this process's own memory cgroup.

        Returns (cgroup, "") or (None, why not). The directory is named from a sanitised `name`
        plus a random suffix, so two tasks with one name never collide. With `memory_limit`
        (bytes, > 0) both `memory.limit_in_bytes` and, where it exists and is writable,
        `memory.memsw.limit_in_bytes` are set, so the task can use neither more memory nor swap.
        """
        if memory_limit is not None and memory_limit <= 0:
            raise ValueError(f"memory_limit must be a positive number of bytes, not {memory_limit}")
        parent = _memory_cgroup_dir(1, "self")
        if parent is None:
            return None, "no v1 memory cgroup controller on this machine"
        path = os.path.join(parent, _cgroup_name(name))
        try:
            os.mkdir(path)
        except OSError as exc:
            return None, f"cannot create memory cgroup {path}: {exc.strerror or exc}"
        cgroup = cls(path, 1, owned=True)
        if memory_limit is not None:
            reason = cgroup._set_v1_limit(memory_limit)
            if reason:
                cgroup.remove()
                return None, reason
        return cgroup, ""

    @classmethod
    def create(cls, name: str, memory_limit: int | None) -> TaskCgroup | None:
        """`try_create()` without the reason."""
        return cls.try_create(name, memory_limit)[0]

    @classmethod
    def open(cls, info: CgroupInfo) -> TaskCgroup:
        """A read-mostly view of an existing cgroup (e.g. the one a backend put the job in)."""
        return cls(info.path, info.version, owned=False)

    def _set_v1_limit(self, limit: int) -> str:
        # memsw must never be below the memory limit, so the memory limit goes first.
        try:
            _write(self._file("memory.limit_in_bytes"), str(limit))
        except OSError as exc:
            return f"cannot set memory.limit_in_bytes of {self.path}: {exc.strerror or exc}"
        memsw = self._file("memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            try:
                _write(memsw, str(limit))
                self.swap_limited = True
            except OSError:
                # Swap accounting switched off at boot: the memory limit alone still holds.
                self.swap_limited = False
        return ""

    # -- putting processes in ----------------------------------------------------------------------

    def add_pid(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup; raises OSError if refused.

        Memory the process allocated before the move stays charged where it was, so move it
        before it allocates (or start it through `wrap_argv()`).
        """
        _write(self._file("cgroup.procs"), str(pid))

    def wrap_argv(self, argv: Sequence[str]) -> list[str]:
        """An argv that joins this cgroup and then execs `argv`, keeping the same pid.

        The command is in the cgroup before it runs a single instruction of its own, with no
        race and no need for it to wait. If joining fails it exits with JOIN_FAILED_EXIT_CODE
        (the shell prints why on stderr) rather than run without its limit.
        """
        script = f'echo $$ > "$0" || exit {JOIN_FAILED_EXIT_CODE}; exec "$@"'
        return ["/bin/sh", "-c", script, self._file("cgroup.procs"), *argv]

    # -- reading -----------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Processes (thread-group ids) in the cgroup now; [] once it is gone."""
        text = _read(self._file("cgroup.procs"))
        if text is None:
            return []
        return sorted({int(word) for word in text.split()})

    def peak_bytes(self) -> int | None:
        """Peak memory charged to the cgroup since it was created (includes page cache)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return _read_int(self._file(name))

    def current_bytes(self) -> int | None:
        """Memory charged to the cgroup now."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _read_int(self._file(name))

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 when unknown)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return _read_keyed(self._file(name)).get("oom_kill", 0)

    def limit(self) -> int | None:
        """This cgroup's own memory limit in bytes, None when unlimited or unreadable."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return _parse_limit(_read(self._file(name)))

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- killing and removing ----------------------------------------------------------------------

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> bool:
        """Signal every process in the cgroup until it is empty; True once it is.

        Whatever a process did to escape (new session, new process group, double fork) it is
        still listed here. New processes forked meanwhile are caught by the next round. SIGKILL
        is re-sent every round; other signals go once to each process, since a second SIGINT or
        SIGTERM means "hurry" to some programs. Processes that ignore the signal leave the
        cgroup non-empty and the call returns False at `timeout` (0 means a single round).
        """
        deadline = time.monotonic() + timeout
        signalled: set[int] = set()
        delay = 0.002
        while True:
            pids = [pid for pid in self.pids() if pid != os.getpid()]
            if not pids:
                return True
            for pid in pids:
                if sig == signal.SIGKILL or pid not in signalled:
                    _send(pid, sig)
                    signalled.add(pid)
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def remove(self, timeout: float = 5.0) -> bool:
        """Kill what is left, wait for the cgroup to empty, delete it; True when it is gone.

        Idempotent and never raises. A cgroup opened with `open()` is not ours: never touched.
        """
        if not self.owned:
            return False
        deadline = time.monotonic() + timeout
        self.kill_all(signal.SIGKILL, timeout)
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                # EBUSY while killed processes are still exiting.
                if time.monotonic() >= deadline:
                    return False
            time.sleep(0.01)

    def __enter__(self) -> TaskCgroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


# -- locating cgroups -----------------------------------------------------------------------------


class _Mount(Frozen):
    _fields = ("root", "point", "fstype", "super_options")
    __slots__ = _fields

    root: str  # the path inside the hierarchy that is mounted (not "/" under some containers)
    point: str
    fstype: str
    super_options: frozenset[str]

    def __init__(self, root: str, point: str, fstype: str, super_options: frozenset[str]) -> None:
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "fstype", fstype)
        object.__setattr__(self, "super_options", super_options)


def _memory_cgroup_dir(version: int, pid: int | str) -> str | None:
    """Directory of `pid`'s memory cgroup in the given hierarchy, None if there is none."""
    own = _read(f"/proc/{pid}/cgroup")
    mountinfo = _read("/proc/self/mountinfo")
    if own is None or mountinfo is None:
        return None
    cgroup_path = _cgroup_path(own, version)
    if cgroup_path is None:
        return None
    for mount in _mounts(mountinfo):
        if _mount_matches(mount, version):
            path = _join(mount, cgroup_path)
            if os.path.isdir(path):
                return path
    return None


def _cgroup_path(proc_cgroup: str, version: int) -> str | None:
    """The path from /proc/PID/cgroup: "4:memory:/a/b" (v1) or "0::/a/b" (v2)."""
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if version == 2 and hierarchy == "0" and not controllers:
            return path
        if version == 1 and "memory" in controllers.split(","):
            return path
    return None


def _mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        # "36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory"
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        options = frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset()
        mounts.append(_Mount(_unescape(fields[3]), _unescape(fields[4]), tail[0], options))
    return mounts


def _mount_matches(mount: _Mount, version: int) -> bool:
    if version == 2:
        return mount.fstype == "cgroup2"
    return mount.fstype == "cgroup" and "memory" in mount.super_options


def _join(mount: _Mount, cgroup_path: str) -> str:
    # A container may mount only its own subtree: /proc says "/docker/abc/x" while the mount's
    # root is "/docker/abc"; the part below the mount root is what lies under the mount point.
    root = mount.root.rstrip("/")
    if root and (cgroup_path == root or cgroup_path.startswith(root + "/")):
        cgroup_path = cgroup_path[len(root) :]
    below = cgroup_path.strip("/")
    # What `Path(point) / below` gave: the point itself for the mount's own root.
    return os.path.join(mount.point, below) if below else os.path.normpath(mount.point)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _v1_effective_limit(path: str) -> int | None:
    # v1 computes the smallest limit up the hierarchy for us.
    stat = _read_keyed(os.path.join(path, "memory.stat"))
    limits = [stat.get("hierarchical_memory_limit"), stat.get("hierarchical_memsw_limit")]
    found = [value for value in limits if value is not None and value < _UNLIMITED]
    return min(found) if found else None


def _v2_effective_limit(path: str) -> int | None:
    limits = []
    while os.path.exists(os.path.join(path, "memory.max")):
        limit = _parse_limit(_read(os.path.join(path, "memory.max")))
        if limit is not None:
            limits.append(limit)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return min(limits) if limits else None


def _cgroup_name(name: str) -> str:
    clean = _UNSAFE_NAME.sub("_", name).strip("._-")[:_NAME_MAX] or "task"
    return f"{_NAME_PREFIX}{clean}-{os.urandom(4).hex()}"


# -- small file helpers ---------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _read_keyed(path: str) -> dict[str, int]:
    """Files of "key value" lines: memory.stat, memory.oom_control, memory.events."""
    values: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def _parse_limit(text: str | None) -> int | None:
    if text is None or text.strip() == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _UNLIMITED else None


def _write(path: str, text: str) -> None:
    # One value per write(2), unbuffered, so the kernel's answer (EINVAL, EBUSY) is raised here.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _send(pid: int, sig: int) -> None:
    # Already gone, or not ours to signal: either way nothing more to do for it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
