"""Slurm's power saving driving a jobfleet provisioner: `ResumeProgram` and `SuspendProgram`.

`slurmctld` runs `jobfleet-slurm-resume cloud[1-3]` when jobs need powered-down nodes,
`jobfleet-slurm-suspend cloud[1-3]` when nodes have idled for `SuspendTime`, and (optionally)
`jobfleet-slurm-resume-fail cloud2` when a node did not register within `ResumeTimeout`. Each
expands the hostlist expression with `scontrol show hostnames` and asks the configured jobfleet
provisioner to create (resume) or terminate (suspend, resume-fail) exactly those nodes.

slurmctld starts these programs with an environment holding only `SLURM_CONF` (and
`SLURM_JOB_ID`, `SLURM_RESUME_FILE` for resumes), no `PATH` and no standard streams, so:

- the configuration is a TOML file, `jobfleet-power.toml` beside `slurm.conf` (the directory of
  `SLURM_CONF`); `JOBFLEET_SLURM_POWER_CONFIG` names another file (for runs by hand or a wrapper
  script); see `PowerConfig` and docs/scaling.md, "Elastic Slurm";
- `scontrol` is looked up in the usual system directories unless the file names it;
- every message goes to the log file the configuration names (default
  `/var/log/slurm/jobfleet-power.log`), one line per event with the action and the nodes.

A resume that fails marks the nodes it could not create `DOWN` with the reason, so slurmctld
requeues their jobs instead of waiting for `ResumeTimeout`. Node names only ever travel as
separate arguments (argv lists), never through a shell.

A provisioner for Slurm must create nodes under the names Slurm gives: it implements the
optional extension `NamedNodeProvisioner.add_named_nodes` (not part of the core protocol).
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jobfleet.core.scaling import Node, Provisioner

__all__ = [
    "CONFIG_FILE_NAME",
    "CONFIG_VARIABLE",
    "DEFAULT_LOG_FILE",
    "NamedNodeProvisioner",
    "PowerConfig",
    "PowerConfigError",
    "PowerPrograms",
    "expand_hostlist",
    "resume_fail_main",
    "resume_main",
    "suspend_main",
]

CONFIG_FILE_NAME = "jobfleet-power.toml"
CONFIG_VARIABLE = "JOBFLEET_SLURM_POWER_CONFIG"
DEFAULT_LOG_FILE = "/var/log/slurm/jobfleet-power.log"
SYSTEM_DIRECTORIES = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin")
REASON_LIMIT = 200  # scontrol keeps reasons short; the log has the full message

log = logging.getLogger("jobfleet.slurm.power")


class PowerConfigError(Exception):
    """The power programs' configuration file is missing or wrong."""


@runtime_checkable
class NamedNodeProvisioner(Protocol):
    """The extension a provisioner needs to serve Slurm: create nodes with given names.

    Slurm declares its cloud nodes up front (`NodeName=cloud[1-3] State=CLOUD`) and resumes
    them by name, so the provisioner cannot pick names as `add_nodes` does. It returns the
    nodes it launched (each `Node.name` one of `names`); a name missing from the result counts
    as failed. It may raise; `retry_predicate` decides whether to try again.
    """

    def add_named_nodes(
        self,
        node_type: str,
        names: Sequence[str],
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]: ...


@dataclass(frozen=True)
class PowerConfig:
    """What `jobfleet-power.toml` says (every key but `provisioner` is optional)::

    provisioner = "aws"              # a plugin name, or "package.module:Class"
    cluster_name = "hpc"             # the provisioner's cluster (default: Slurm's ClusterName)
    log_file = "/var/log/slurm/jobfleet-power.log"
    scontrol = "/usr/bin/scontrol"   # default: found in the system directories
    python_path = []                 # directories put in front of sys.path before importing
    set_node_addr = true             # tell slurmctld a resumed node's private IP (NodeAddr)
    preemptible = false              # resume on spot capacity
    attempts = 3                     # tries of a resume the provisioner says may be retried
    node_type = "c5.large"           # the type of every node not matched below

    [node_types]                     # Slurm node name pattern (fnmatch) -> node type
    "gpu*" = "p3.2xlarge"

    [settings]                       # a plugin's settings, by field name
    region = "eu-west-1"

    [parameters]                     # more keyword arguments of the constructor
    image = "ami-0123456789abcdef0"
    """

    provisioner: str
    path: Path
    cluster_name: str | None = None
    log_file: Path = Path(DEFAULT_LOG_FILE)
    scontrol: str | None = None
    python_path: tuple[str, ...] = ()
    set_node_addr: bool = True
    preemptible: bool = False
    attempts: int = 3
    node_type: str | None = None
    node_types: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def locate(cls, environ: Mapping[str, str]) -> Path:
        """The configuration file: `JOBFLEET_SLURM_POWER_CONFIG`, else beside slurm.conf."""
        if environ.get(CONFIG_VARIABLE):
            return Path(environ[CONFIG_VARIABLE])
        slurm_conf = Path(environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
        return slurm_conf.parent / CONFIG_FILE_NAME

    @classmethod
    def load(cls, path: Path) -> PowerConfig:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise PowerConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PowerConfigError(f"{path} is not valid TOML: {exc}") from None
        known = {"provisioner", "cluster_name", "log_file", "scontrol", "python_path",
                 "set_node_addr", "preemptible", "attempts", "node_type", "node_types",
                 "parameters", "settings"}  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise PowerConfigError(f"{path}: unknown keys {', '.join(unknown)}")
        expected: dict[str, type | tuple[type, ...]] = {
            "provisioner": str, "cluster_name": str, "log_file": str, "scontrol": str,
            "python_path": list, "set_node_addr": bool, "preemptible": bool, "attempts": int,
            "node_type": str, "node_types": dict, "parameters": dict, "settings": dict,
        }  # fmt: skip
        for key, value in data.items():
            if not isinstance(value, expected[key]):
                raise PowerConfigError(f"{path}: {key} has the wrong type ({value!r})")
        if not data.get("provisioner"):
            raise PowerConfigError(f"{path}: 'provisioner' is required (a plugin name or "
                                   "'package.module:Class')")  # fmt: skip
        if data.get("attempts", 1) < 1:
            raise PowerConfigError(f"{path}: attempts must be 1 or more")
        if not all(isinstance(v, str) for v in data.get("node_types", {}).values()):
            raise PowerConfigError(f"{path}: [node_types] maps name patterns to type names")
        return cls(
            provisioner=data["provisioner"],
            path=path,
            cluster_name=data.get("cluster_name"),
            log_file=Path(data.get("log_file", DEFAULT_LOG_FILE)),
            scontrol=data.get("scontrol"),
            python_path=tuple(str(p) for p in data.get("python_path", ())),
            set_node_addr=data.get("set_node_addr", True),
            preemptible=data.get("preemptible", False),
            attempts=data.get("attempts", 3),
            node_type=data.get("node_type"),
            node_types=dict(data.get("node_types", {})),
            parameters=dict(data.get("parameters", {})),
            settings=dict(data.get("settings", {})),
        )

    def node_type_of(self, name: str) -> str | None:
        """The node type for Slurm node `name`: the first matching pattern, else `node_type`."""
        for pattern, node_type in self.node_types.items():
            if fnmatch.fnmatchcase(name, pattern):
                return node_type
        return self.node_type


def find_program(name: str, configured: str | None = None) -> str:
    """A Slurm command's path: configured, on PATH, or in the system directories."""
    if configured:
        return configured
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SYSTEM_DIRECTORIES))
    return found or name


def run_scontrol(scontrol: str, *arguments: str, timeout: float = 30) -> str:
    """`scontrol ARGUMENTS…` (argv, no shell); its output, or RuntimeError saying why."""
    try:
        done = subprocess.run(
            [scontrol, *arguments], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"scontrol {arguments[0]} could not run: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or "no message"
        raise RuntimeError(f"scontrol {' '.join(arguments[:2])} failed ({done.returncode}): "
                           f"{detail}")  # fmt: skip
    return done.stdout


def expand_hostlist(expression: str, scontrol: str) -> list[str]:
    """Slurm's own expansion of a hostlist expression (`cloud[1-3,7]` → cloud1 … cloud7)."""
    if not expression.strip():
        return []
    names = run_scontrol(scontrol, "show", "hostnames", expression).split()
    if not names:
        raise RuntimeError(f"scontrol show hostnames {expression!r} gave no names")
    return names


def load_provisioner(config: PowerConfig, cluster_name: str, environ: Mapping[str, str]) -> Any:
    """Build the configured provisioner.

    A plugin name goes through jobfleet's plugin discovery (the `get_provisioner_class` hook);
    its settings are `[settings]` of the file over `JOBFLEET_<NAME>_…` variables (slurmctld
    passes none, so the file is what counts). `package.module:Class` is imported directly (a
    site's own provisioner, not packaged as a plugin) and gets no settings object.
    """
    for directory in reversed(config.python_path):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    parameters = dict(config.parameters)
    if ":" in config.provisioner:
        module_name, _, attribute = config.provisioner.partition(":")
        found = getattr(importlib.import_module(module_name), attribute, None)
        if not isinstance(found, type):
            raise PowerConfigError(f"{config.provisioner} is not a class")
        if config.settings:
            raise PowerConfigError(
                f"{config.path}: [settings] needs a provisioner plugin; give a class's "
                "options in [parameters]"
            )
        return found(cluster_name, **parameters)
    from jobfleet.core.plugins import get_provisioner

    plugin = get_provisioner(config.provisioner)
    settings = plugin.settings(cli_values=dict(config.settings), environ=environ)
    return plugin.provisioner_class(cluster_name, settings=settings, **parameters)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'no message'}"


class PowerPrograms:
    """The resume, suspend and resume-fail actions, for one configuration."""

    def __init__(
        self,
        config: PowerConfig,
        provisioner: Any,
        *,
        scontrol: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.provisioner = provisioner
        self.scontrol = scontrol
        self.sleep = sleep

    @classmethod
    def from_config(cls, config: PowerConfig, environ: Mapping[str, str]) -> PowerPrograms:
        scontrol = find_program("scontrol", config.scontrol)
        cluster_name = config.cluster_name or _slurm_cluster_name(scontrol)
        provisioner = load_provisioner(config, cluster_name, environ)
        if not isinstance(provisioner, Provisioner):
            raise PowerConfigError(f"{config.provisioner} does not implement Provisioner")
        return cls(config, provisioner, scontrol=scontrol)

    # --- resume ---------------------------------------------------------------------------

    def resume(self, names: Sequence[str]) -> bool:
        """Create the nodes `names`; mark those that could not be created DOWN. All created?"""
        if not isinstance(self.provisioner, NamedNodeProvisioner):
            self.mark_down(
                names, f"{type(self.provisioner).__name__} cannot create named nodes "
                "(it lacks add_named_nodes)",
            )  # fmt: skip
            return False
        by_type: dict[str, list[str]] = {}
        untyped = []
        for name in names:
            node_type = self.config.node_type_of(name)
            if node_type is None:
                untyped.append(name)
            else:
                by_type.setdefault(node_type, []).append(name)
        ok = True
        if untyped:
            self.mark_down(untyped, f"no node type for it in {self.config.path} "
                           "(set node_type or [node_types])")  # fmt: skip
            ok = False
        for node_type, group in by_type.items():
            ok = self._resume_group(node_type, group) and ok
        return ok

    def _resume_group(self, node_type: str, names: list[str]) -> bool:
        provisioner: Any = self.provisioner
        wanted = list(names)
        launched: list[Node] = []
        for attempt in range(1, self.config.attempts + 1):
            log.info("resume: creating %s (type %s, attempt %d)", ",".join(wanted), node_type,
                     attempt)  # fmt: skip
            try:
                nodes = provisioner.add_named_nodes(
                    node_type, wanted, preemptible=self.config.preemptible
                )
            except Exception as exc:
                retry = attempt < self.config.attempts and _safely(provisioner.retry_predicate,
                                                                   exc)  # fmt: skip
                log.error("resume: creating %s (type %s) failed%s: %s", ",".join(wanted),
                          node_type, ", retrying" if retry else "", _short(exc),
                          exc_info=not retry)  # fmt: skip
                if retry:
                    self.sleep(min(2.0**attempt, 30.0))
                    continue
                self.mark_down(wanted, f"resume failed: {_short(exc)}")
                return False
            launched.extend(node for node in nodes if node.name in wanted)
            break
        for node in launched:
            log.info("resume: %s launched (type %s, private ip %s)", node.name, node.node_type,
                     node.private_ip or "unknown")  # fmt: skip
            if self.config.set_node_addr and node.private_ip:
                try:
                    run_scontrol(self.scontrol, "update", f"nodename={node.name}",
                                 f"nodeaddr={node.private_ip}")  # fmt: skip
                except RuntimeError as exc:
                    log.error("resume: cannot set the address of %s: %s", node.name, exc)
                    self.mark_down([node.name], f"cannot set its address: {exc}")
        missing = sorted(set(wanted) - {node.name for node in launched})
        if missing:
            self.mark_down(missing, f"the provisioner did not create it (type {node_type})")
            return False
        return True

    def mark_down(self, names: Sequence[str], reason: str) -> None:
        """`scontrol update nodename=… state=down reason=…`: slurmctld stops waiting for them."""
        if not names:
            return
        text = f"jobfleet: {reason}".replace("\n", " ")
        if len(text) > REASON_LIMIT:
            text = text[: REASON_LIMIT - 1] + "…"
        log.error("marking %s down: %s", ",".join(names), reason)
        try:
            run_scontrol(self.scontrol, "update", f"nodename={','.join(names)}", "state=down",
                         f"reason={text}")  # fmt: skip
        except RuntimeError as exc:
            log.error("could not mark %s down (Slurm waits for ResumeTimeout): %s",
                      ",".join(names), exc)  # fmt: skip

    # --- suspend --------------------------------------------------------------------------

    def terminate(self, names: Sequence[str], action: str = "suspend") -> bool:
        """Terminate the provisioner's nodes named `names`; names it does not know are gone."""
        try:
            live = {node.name: node for node in self.provisioner.get_provisioned_workers()}
        except Exception as exc:
            log.error("%s: cannot list the provisioned nodes for %s: %s", action,
                      ",".join(names), _short(exc), exc_info=True)  # fmt: skip
            return False
        nodes = [live[name] for name in names if name in live]
        gone = [name for name in names if name not in live]
        if gone:
            log.info("%s: %s already gone", action, ",".join(gone))
        if not nodes:
            return True
        for attempt in range(1, self.config.attempts + 1):
            log.info("%s: terminating %s (attempt %d)", action, ",".join(n.name for n in nodes),
                     attempt)  # fmt: skip
            try:
                self.provisioner.terminate_nodes(nodes)
            except Exception as exc:
                retry = attempt < self.config.attempts and _safely(
                    self.provisioner.retry_predicate, exc
                )
                log.error("%s: terminating %s failed%s: %s", action,
                          ",".join(n.name for n in nodes), ", retrying" if retry else "",
                          _short(exc), exc_info=not retry)  # fmt: skip
                if retry:
                    self.sleep(min(2.0**attempt, 30.0))
                    continue
                return False
            log.info("%s: %s terminated", action, ",".join(n.name for n in nodes))
            return True
        return False


def _safely(predicate: Callable[[BaseException], bool], error: BaseException) -> bool:
    try:
        return bool(predicate(error))
    except Exception:
        log.exception("retry_predicate raised; not retrying")
        return False


def _slurm_cluster_name(scontrol: str) -> str:
    for line in run_scontrol(scontrol, "show", "config").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName" and value.strip():
            return value.strip()
    return "slurm"


# --- the programs -------------------------------------------------------------------------


def _setup_logging(path: Path) -> None:
    """Log to `path`; when it cannot be opened, to standard error if there is one."""
    formatter = logging.Formatter(
        f"%(asctime)s jobfleet-slurm-power[{os.getpid()}] %(levelname)s %(message)s"
    )
    handler: logging.Handler
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError:
        handler = logging.StreamHandler(sys.stderr if sys.stderr else open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _main(action: str, argv: Sequence[str] | None = None) -> int:
    # slurmctld's threads block signals, and a program it forks inherits that mask (so would
    # whatever the provisioner starts: a daemon deaf to SIGTERM). Unblock them all.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    arguments = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    path = PowerConfig.locate(environ)
    try:
        config = PowerConfig.load(path)
    except PowerConfigError as exc:
        _setup_logging(Path(DEFAULT_LOG_FILE))
        log.error("%s %s: %s", action, " ".join(arguments), exc)
        if action == "resume" and arguments:
            programs = PowerPrograms(
                PowerConfig(provisioner="?", path=path), None, scontrol=find_program("scontrol")
            )
            _mark_expression_down(programs, arguments[0], f"configuration: {exc}")
        return 1
    _setup_logging(config.log_file)
    if not arguments:
        log.error("%s: no hostlist given (slurmctld passes one, e.g. cloud[1-3])", action)
        return 2
    scontrol = find_program("scontrol", config.scontrol)
    expression = arguments[0]
    job = environ.get("SLURM_JOB_ID")
    log.info("%s %s%s", action, expression, f" (job {job})" if job else "")
    try:
        names = expand_hostlist(expression, scontrol)
    except RuntimeError as exc:
        log.error("%s: cannot expand the hostlist %r: %s", action, expression, exc)
        return 1
    try:
        programs = PowerPrograms.from_config(config, environ)
    except Exception as exc:
        log.error("%s %s: cannot load the provisioner %r from %s: %s", action, ",".join(names),
                  config.provisioner, config.path, _short(exc), exc_info=True)  # fmt: skip
        if action == "resume":
            PowerPrograms(config, None, scontrol=scontrol).mark_down(
                names, f"cannot load provisioner {config.provisioner}: {_short(exc)}"
            )
        return 1
    ok = programs.resume(names) if action == "resume" else programs.terminate(names, action)
    return 0 if ok else 1


def _mark_expression_down(programs: PowerPrograms, expression: str, reason: str) -> None:
    try:
        names = expand_hostlist(expression, programs.scontrol)
    except RuntimeError as exc:
        log.error("cannot expand the hostlist %r to mark it down: %s", expression, exc)
        return
    programs.mark_down(names, reason)


def resume_main() -> int:
    """`ResumeProgram`: create the nodes of the hostlist in argv[1]."""
    return _main("resume")


def suspend_main() -> int:
    """`SuspendProgram`: terminate the nodes of the hostlist in argv[1]."""
    return _main("suspend")


def resume_fail_main() -> int:
    """`ResumeFailProgram`: terminate nodes that did not register within `ResumeTimeout`
    (slurmctld has already marked them DOWN)."""
    return _main("resume-fail")
