"""Settings of the Mesos backend (`--mesos-…`, `JOBFLEET_MESOS_…`).

The framework's secret is never a setting: settings are stored with the run and shown on
command lines. `secret_file` names a file holding it, `secret_variable` an environment variable
holding it; the secret itself is read when the distributor starts and kept in memory only.

Lists are written as text: `master` is `host:port,host2:port` (or one `zk://…/mesos` URL);
`placement` is `key=v1|v2,key2` (agent attributes a task's agent must carry; a key alone: any
value); `pass_env` is `NAME,PATTERN_*`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from jobfleet.core.settings import setting

_ENV_PATTERN = re.compile(r"[A-Za-z_*?\[\]!][A-Za-z0-9_*?\[\]!]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class MesosSettings:
    master: str = setting(
        "127.0.0.1:5050",
        help="Mesos master address(es): host:port, several comma-separated (tried in turn), "
        "or a zk://host:2181/mesos URL.",
    )
    framework_name: str = setting("jobfleet", help="Name of the framework the master shows.")
    role: str = setting("*", help="Role the framework subscribes with (its share of offers).")
    principal: str | None = setting(
        None, help="Principal the framework authenticates as (HTTP Basic, with the secret)."
    )
    secret_file: Path | None = setting(
        None, help="File holding the principal's secret (read at start, never logged)."
    )
    secret_variable: str | None = setting(
        None,
        help="Environment variable holding the principal's secret (its name, not the secret).",
    )
    user: str = setting(
        "", help="User the agents run the tasks as (default: the host's user name)."
    )
    failover_timeout: float = setting(
        3600.0,
        help="Seconds the master keeps the framework and its tasks while the host is away "
        "(jobfleet run --resume within it takes them up again).",
    )
    refuse_seconds: float = setting(
        5.0, help="Seconds the master keeps back an agent's resources after a declined offer."
    )
    executor_command: str = setting(
        "jobfleet-mesos-executor",
        help="Command (shell words) that starts jobfleet's executor on the agents.",
    )
    worker_command: str = setting(
        "jobfleet-worker-node",
        help="The worker-node command on the agents ($JOBFLEET_WORKER_NODE wins when set).",
    )
    channel_address: str | None = setting(
        None,
        help="The host channel's address as agents reach it (default: the host's own URL), "
        "e.g. http://10.0.0.5:8765.",
    )
    placement: str = setting(
        "",
        help="Agent attributes every task's agent must have: key=v1|v2,key2 (a key alone: any "
        "value).",
    )
    preemptible_attribute: str = setting(
        "preemptible=true",
        help="The agent attribute (key=value) that marks preemptible agents; only tasks asking "
        "preemptible: true are placed there.",
    )
    pass_env: str = setting(
        "",
        help="Host variables copied into every task's environment at submission: names or "
        "patterns (MY_*), comma-separated; the host's own variables and the channel token "
        "never are.",
    )
    default_cores: float = setting(1.0, help="Cores of tasks that ask for none.")
    default_memory: str = setting("1G", help="Memory of tasks that ask for none.")
    default_disk: str = setting("0", help="Disk of every task (Mesos `disk`, e.g. 1G; 0: none).")
    unplaceable_timeout: float = setting(
        60.0,
        help="Seconds a task no known agent could ever hold may wait before it is a queueing "
        "error.",
    )
    kill_grace: float = setting(
        10.0, help="Seconds a killed task gets between SIGTERM and SIGKILL."
    )
    kill_wait: float = setting(
        60.0, help="Seconds a kill or stop() waits for the tasks' terminal updates."
    )
    node_report_interval: float = setting(
        30.0, help="Seconds between the executors' reports of their agent's load (get_nodes)."
    )

    def __post_init__(self) -> None:
        if not self.masters():
            raise ValueError("master must name at least one master (host:port)")
        for master in self.masters():
            if not master.startswith(("zk://", "zoo://")) and not re.fullmatch(
                r"[A-Za-z0-9_.\-\[\]:]+", master
            ):
                raise ValueError(f"master: {master!r} is not host:port or a zk:// URL")
        if not self.framework_name.strip():
            raise ValueError("framework_name must not be empty")
        if not self.role.strip() or any(c.isspace() for c in self.role):
            raise ValueError(f"role must be a role name without spaces, not {self.role!r}")
        if self.secret_file is not None and self.secret_variable is not None:
            raise ValueError("give the secret as secret_file or secret_variable, not both")
        if (self.secret_file is not None or self.secret_variable is not None) and not (
            self.principal
        ):
            raise ValueError("a secret needs a principal")
        if self.secret_variable is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", self.secret_variable
        ):
            raise ValueError(
                "secret_variable must be the name of an environment variable (not the secret)"
            )
        for field in ("failover_timeout", "refuse_seconds", "unplaceable_timeout", "kill_grace"):
            if not 0 <= getattr(self, field) < float("inf"):
                raise ValueError(f"{field} must be 0 or more seconds, not {getattr(self, field)}")
        for field in ("default_cores", "kill_wait", "node_report_interval"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be positive, not {getattr(self, field)}")
        for field in ("executor_command", "worker_command"):
            if not getattr(self, field).strip():
                raise ValueError(f"{field} must not be empty")
        from jobfleet.core.resources import parse_memory

        for field in ("default_memory", "default_disk"):
            text = getattr(self, field)
            if field == "default_disk" and str(text).strip() == "0":
                continue
            try:
                parse_memory(text, field=field)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        self.placement_constraints()
        self.preemptible_marker()
        for pattern in split_names(self.pass_env, "pass_env"):
            if not _ENV_PATTERN.fullmatch(pattern):
                raise ValueError(f"pass_env: {pattern!r} is not a variable name or pattern")
        if self.channel_address is not None and not self.channel_address.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"channel_address must be an http:// or https:// URL, not {self.channel_address!r}"
            )

    def masters(self) -> list[str]:
        """The master addresses, in the order they are tried."""
        return [m.strip() for m in self.master.split(",") if m.strip()]

    def placement_constraints(self) -> dict[str, list[str]]:
        """`placement` as {attribute: accepted values} ([]: any value)."""
        result: dict[str, list[str]] = {}
        for item in split_names(self.placement, "placement"):
            key, equals, values = item.partition("=")
            key = key.strip()
            if not _NAME.fullmatch(key):
                raise ValueError(f"placement: {item!r} has no attribute name")
            choices = [v.strip() for v in values.split("|")] if equals else []
            if equals and not all(choices):
                raise ValueError(f"placement: {item!r} has an empty value")
            result[key] = choices
        return result

    def preemptible_marker(self) -> tuple[str, str]:
        """`preemptible_attribute` as (name, value)."""
        key, equals, value = self.preemptible_attribute.partition("=")
        if not equals or not _NAME.fullmatch(key.strip()) or not value.strip():
            raise ValueError(
                f"preemptible_attribute must be name=value, not {self.preemptible_attribute!r}"
            )
        return key.strip(), value.strip()

    def passed_env(self, environ: dict[str, str]) -> dict[str, str]:
        """The host variables `pass_env` names, from `environ`."""
        patterns = split_names(self.pass_env, "pass_env")
        return {
            name: value
            for name, value in environ.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        }

    def read_secret(self) -> str | None:
        """The principal's secret, from its file or variable (None when neither is set)."""
        if self.secret_file is not None:
            try:
                text = Path(os.path.expanduser(self.secret_file)).read_text()
            except OSError as exc:
                raise ValueError(
                    f"the Mesos secret file {self.secret_file} cannot be read: {exc.strerror}"
                ) from None
            secret = text.strip()
            if not secret:
                raise ValueError(f"the Mesos secret file {self.secret_file} is empty")
            return secret
        if self.secret_variable is not None:
            secret = os.environ.get(self.secret_variable, "").strip()
            if not secret:
                raise ValueError(f"the variable {self.secret_variable} (the Mesos secret) is unset")
            return secret
        return None


def split_names(text: str, field: str) -> list[str]:
    """`a,b , c` → ["a", "b", "c"]; empty items are refused."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{field} has an empty item in {text!r}")
    return items
