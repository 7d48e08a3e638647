"""What the Mesos distributor remembers across a host crash, in the host's `state_dir`.

One journal file, `mesos.journal` (0600), of JSON lines, each written whole with one
`write` on an `O_APPEND` descriptor before the step it records is taken:

- `{"run": RUN}` — the run's id in task ids (the first line);
- `{"framework": ID}` — the framework id the master gave (re-subscribed with on `--resume`);
- `{"submit": {ID: SPEC}}` — tasks accepted from the host, with what launching them needs
  (argv, shape, environment from `pass_env`; never the channel token, which the host gives
  again on resume);
- `{"launch": [ID…], "agent": AGENT}` — written *before* the ACCEPT that launches them;
- `{"end": {ID: RESULT}}` — an outcome, written before its status update is acknowledged;
- `{"kill": [ID…]}` — kills the host asked for.

On load, the journal is replayed and rewritten compactly (a temporary file renamed over it).
A torn last line (the host died inside a `write`) is ignored: what it recorded had not
happened yet. The data reaches the kernel before each step, so a crash of the host process
loses nothing; a crash of the whole machine may lose the last lines (no fsync per line).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobfleet.core.private import open_private

JOURNAL = "mesos.journal"


@dataclass
class Recovered:
    """What a journal held."""

    run: str
    framework_id: str | None = None
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    launched: dict[str, str] = field(default_factory=dict)  # id → agent id
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)


class Journal:
    """The journal of one run's distributor; without a directory, it remembers nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / JOURNAL if directory is not None else None
        self._lock = threading.Lock()
        self._fd: int | None = None

    def load(self) -> Recovered:
        """Replay the journal (a fresh run id when there is none) and compact it."""
        recovered = Recovered(run=secrets.token_hex(5))
        if self.path is None:
            return recovered
        lines: list[str] = []
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if isinstance(record, dict):
                _apply(recovered, record)
        self._rewrite(recovered)
        return recovered

    def _rewrite(self, state: Recovered) -> None:
        assert self.path is not None
        records: list[dict[str, Any]] = [{"run": state.run}]
        if state.framework_id:
            records.append({"framework": state.framework_id})
        if state.specs:
            records.append({"submit": state.specs})
        by_agent: dict[str, list[str]] = {}
        for did, agent in state.launched.items():
            by_agent.setdefault(agent, []).append(did)
        records.extend({"launch": ids, "agent": agent} for agent, ids in by_agent.items())
        if state.ended:
            records.append({"end": state.ended})
        if state.killed:
            records.append({"kill": sorted(state.killed)})
        temporary = self.path.with_name(f".{JOURNAL}.{os.getpid()}.tmp")
        fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, "".join(_line(r) for r in records).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a no-op without a directory)."""
        if self.path is None:
            return
        data = _line(record).encode()
        with self._lock:
            if self._fd is None:
                self._fd = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def forget(self) -> None:
        """The run's framework is torn down: nothing is left to take up."""
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def _apply(state: Recovered, record: dict[str, Any]) -> None:
    if isinstance(record.get("run"), str):
        state.run = record["run"]
    if isinstance(record.get("framework"), str):
        state.framework_id = record["framework"]
    for did, spec in (record.get("submit") or {}).items():
        state.specs[did] = spec
    if isinstance(record.get("launch"), list):
        for did in record["launch"]:
            state.launched[did] = str(record.get("agent") or "")
    for did, result in (record.get("end") or {}).items():
        state.ended[did] = result
        state.specs.pop(did, None)
        state.launched.pop(did, None)
    if isinstance(record.get("kill"), list):
        state.killed.update(record["kill"])
