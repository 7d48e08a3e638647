"""Fixtures of the ledger tests: a ledger URL on SQLite and on a throwaway PostgreSQL server."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.testing.host import abandoned_directories, hold_session_lock

pytest.importorskip("sqlalchemy", reason="the ledger needs the host extra (jobfleet-core[host])")

NO_POSTGRES = "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
# The throwaway server's superuser password; tests check that it never shows.
PG_PASSWORD = "s3cret-pw"  # noqa: S105


def _postgres_bindir() -> Path | None:
    candidates: list[str] = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        bindir = Path(candidate)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]
    # Held (flock) while this session lives: a directory whose lock is free was left behind
    # by a run that was killed before it could stop its server.
    lock: object = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(self, *argv: str) -> None:
        done = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}{tail}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"ledger_{uuid.uuid4().hex[:12]}"
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres password={PG_PASSWORD}"
        with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _sweep_stale_servers(bindir: Path) -> None:
    """Stop and remove servers of earlier runs that were killed (Ctrl-C, a timeout).

    Only directories whose lock nobody holds: a test session running beside this one keeps its
    server.
    """
    for root in abandoned_directories("jobfleet-pg-*"):
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m",
                 "immediate", "stop"], capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _start_postgres(bindir: Path) -> PostgresServer:
    _sweep_stale_servers(bindir)
    root = Path(tempfile.mkdtemp(prefix="jobfleet-pg-"))
    lock = hold_session_lock(root)
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: hand the directory to the postgres user.
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, root, _free_port(), as_user, lock)
    (root / "pw").write_text(PG_PASSWORD)
    if as_user:
        os.chown(root / "pw", pwd.getpwnam("postgres").pw_uid, -1)
    server.run(
        str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
        "--pwfile", str(root / "pw"), "-A", "scram-sha-256", "--no-sync", "-E", "UTF8",
        "--no-locale",
    )  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories={root} "
        "-c fsync=off -c full_page_writes=off"
    )
    server.run(
        str(bindir / "pg_ctl"), "-D", str(server.data), "-w", "-t", "30",
        "-l", str(root / "log"), "-o", options, "start",
    )  # fmt: skip
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(NO_POSTGRES)
    server = _start_postgres(bindir)
    try:
        yield server
    finally:
        subprocess.run(
            [*server.as_user, str(bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate",
             "stop"], capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a new, empty ledger database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    """A new SQLite ledger in the test's directory (modules that test both backends, or want
    another, define their own)."""
    from jobfleet.core.host.ledger import Ledger

    with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened
