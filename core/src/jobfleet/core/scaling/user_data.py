"""What a new node sets up when it boots, rendered as cloud-init user data.

`InstanceConfiguration` collects files, systemd units and SSH public keys; `render()` writes them
as a `#cloud-config` document: `write_files` for files and unit files, `ssh_authorized_keys` for
keys, and `runcmd` to reload systemd and enable (and start) the units marked so. Nothing secret
belongs here: user data is readable by anyone on the node and through the provider's API.

The document is YAML written without a YAML library (the core depends on pluggy only): every
string is a double-quoted scalar with YAML's escapes, so any text survives a round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["InstanceConfiguration", "UserFile", "UserUnit"]

_MODE_RE = re.compile(r"0?[0-7]{3,4}", re.ASCII)
_UNIT_RE = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(service|socket|timer|mount|path|target)", re.ASCII)
_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-", "sk-ssh-ed25519", "sk-ecdsa-sha2-")


@dataclass(frozen=True)
class UserFile:
    path: str
    content: str
    mode: str = "0644"


@dataclass(frozen=True)
class UserUnit:
    name: str
    content: str
    enable: bool = True


@dataclass
class InstanceConfiguration:
    """Files, systemd units and SSH keys for a node's first boot."""

    files: list[UserFile] = field(default_factory=list)
    units: list[UserUnit] = field(default_factory=list)
    ssh_public_keys: list[str] = field(default_factory=list)

    def add_file(self, path: str, content: str, mode: str | int = "0644") -> None:
        """Write `content` to the absolute `path` with `mode` (octal text such as "0755",
        or an int such as 0o755)."""
        if not path.startswith("/") or "\0" in path or "\n" in path:
            raise ValueError(f"A file's path must be absolute and on one line, not {path!r}")
        text = f"{mode:04o}" if isinstance(mode, int) else mode
        if not _MODE_RE.fullmatch(text):
            raise ValueError(f"A file's mode must be octal such as '0755' or 0o755, not {mode!r}")
        self.files.append(UserFile(path, content, text.zfill(4)))

    def add_unit(self, name: str, content: str, enable: bool = True) -> None:
        """Install the systemd unit `name` (with its suffix, e.g. `jobfleet-agent.service`);
        when `enable`, it is enabled and started at boot."""
        if not _UNIT_RE.fullmatch(name):
            raise ValueError(
                f"A systemd unit name must end in .service, .socket, .timer, .mount, .path or "
                f".target and hold no '/', not {name!r}"
            )
        self.units.append(UserUnit(name, content, enable))

    def add_ssh_public_key(self, key: str) -> None:
        """Authorise a public key: a full OpenSSH line such as `ssh-ed25519 AAAA… comment`."""
        line = key.strip()
        if "\n" in line or not line.startswith(_KEY_TYPES) or len(line.split()) < 2:
            raise ValueError(
                "An SSH public key must be one OpenSSH line such as 'ssh-ed25519 AAAA… comment' "
                f"(a private key never belongs here), not {line[:40]!r}"
            )
        self.ssh_public_keys.append(line)

    def render(self) -> str:
        """The cloud-init user data (`#cloud-config` YAML)."""
        lines = ["#cloud-config"]
        written = [*self.files]
        written += [
            UserFile(f"/etc/systemd/system/{unit.name}", unit.content, "0644")
            for unit in self.units
        ]
        if written:
            lines.append("write_files:")
            for item in written:
                lines += [
                    f"  - path: {_quote(item.path)}",
                    f"    permissions: {_quote(item.mode)}",
                    '    owner: "root:root"',
                    f"    content: {_quote(item.content)}",
                ]
        if self.ssh_public_keys:
            lines.append("ssh_authorized_keys:")
            lines += [f"  - {_quote(key)}" for key in self.ssh_public_keys]
        if self.units:
            lines.append("runcmd:")
            lines.append('  - ["systemctl", "daemon-reload"]')
            for unit in self.units:
                if unit.enable:
                    lines.append(f'  - ["systemctl", "enable", "--now", {_quote(unit.name)}]')
        return "\n".join(lines) + "\n"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _printable(char: str) -> bool:
    """YAML's printable set (what a reader accepts unescaped), less line breaks."""
    code = ord(char)
    if char in "\u2028\u2029\ufeff":
        return False
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _quote(text: str) -> str:
    """`text` as a YAML double-quoted scalar."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif _printable(char):
            out.append(char)
        else:
            code = ord(char)
            out.append(
                f"\\x{code:02x}"
                if code <= 0xFF
                else f"\\u{code:04x}"
                if code <= 0xFFFF
                else f"\\U{code:08x}"
            )
    return '"' + "".join(out) + '"'
