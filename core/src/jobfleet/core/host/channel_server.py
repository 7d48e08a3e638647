"""The host's side of the http channel: a small server in front of the run's file channel.

The host keeps a run's channel as a `FileChannel` on its own disk (`<work dir>/channel`) and
this server makes it reachable by wrappers that share no file system with the host (pods):

    GET  /runs/<key>/channel                             {"protocol": 1}
    GET  /runs/<key>/specs/<task_instance_id>            the spec file, as stored
    GET  /runs/<key>/arrays/<array>/<batch>/<step>       {"task_instance_id": N, "spec": … | null}
    GET  /runs/<key>/members/<array>.<batch>.<step>      {"kill": …, "running": …} (packing)
    PUT  /runs/<key>/members/<member>/kill               a member kill request
    PUT, DELETE /runs/<key>/members/<member>/running     a pack worker's running mark
    POST /runs/<key>/events/<task_instance_id>/<writer>  event lines, appended to that
                                                         writer's events file

The host reads events straight from the file channel with its usual cursor, so `read_events`,
`remove_spec`, cursors and crash-resume are those of the file transport. Posts are idempotent:
the server keeps each writer's highest stored sequence (recovered from its events file after a
restart) and acknowledges, without storing again, what it already has.

Every request must carry `Authorization: Bearer <the run's token>` (compared in constant
time). The token lives in the run's channel directory, in a 0600 file (`TOKEN_FILE`); the
server never logs it (uvicorn's access log is off, and a filter scrubs it from any record of
uvicorn's loggers). See docs/channel.md and docs/security.md.

Starlette and uvicorn (the `host` extra) are imported when a server starts, never by the CLI's
start-up nor by the worker node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from jobfleet.core.channel import PROTOCOL_VERSION, ChannelError, Event, FileChannel
from jobfleet.core.errors import JobfleetError
from jobfleet.core.private import open_private

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "DEFAULT_BIND",
    "TOKEN_FILE",
    "ChannelServer",
    "ChannelServerError",
    "ServedChannel",
    "load_or_create_token",
    "parse_bind",
    "serve_channel",
]

TOKEN_FILE: Final = "http-token"  # noqa: S105 - a file name, not a token
"""The run's channel token, in the channel directory, 0600."""

DEFAULT_BIND: Final = "127.0.0.1:0"
"""Loopback, any free port: nothing off this machine can connect unless told otherwise."""

MAX_BODY: Final = 1024 * 1024
"""Largest request body (bytes); larger ones get 413."""

BODY_TIMEOUT: Final = 30.0
"""Seconds a client may take to send a request body; slower ones get 408."""

LIMIT_CONCURRENCY: Final = 1000
"""Connections and requests at once before new requests get 503 (the wrapper retries them)."""

_DURABLE_HEADER: Final = "x-jobfleet-durable"
_KEY_CHARACTERS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
)

log = logging.getLogger(__name__)


class ChannelServerError(JobfleetError):
    """The channel server could not be started (address in use, bad TLS files, …)."""


def parse_bind(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[::1]:PORT` for IPv6); a clear error otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ChannelServerError(
            f"The channel's bind address {text!r} must be HOST:PORT, e.g. 127.0.0.1:0 "
            "(0: any free port) or 0.0.0.0:8765."
        )
    return host, int(port)


def load_or_create_token(channel_root: str | os.PathLike[str]) -> str:
    """The run's channel token from `<channel>/http-token`, made (0600) on first use.

    The file is written whole under another name, then linked into place: a host killed while
    writing it leaves no empty token file (one did, and stopped every `--resume` of the run).
    An empty file left that way was never handed to a wrapper, so it is replaced.
    """
    path = Path(channel_root, TOKEN_FILE)
    token = _read_token_file(path)
    if token:
        return token
    fresh = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            stream.write(fresh + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            token = _read_token_file(path)
            if token:
                return token  # another process of this run made it first
            os.replace(temporary, path)
        return fresh
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _read_token_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


class _Refused(Exception):
    """A request answered with a 4xx/5xx JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass
class _WriterState:
    """What the server knows of one writer's events file."""

    highest: int = -1
    torn: bool = False
    """The file ends with a partial record (a write failed or the host crashed mid-write):
    the next append starts with a newline so that only that record is lost."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Run:
    key: str
    channel: FileChannel
    token: bytes
    writers: dict[tuple[int, str], _WriterState] = field(default_factory=dict)
    arrays: dict[tuple[int, int], tuple[tuple[int, int], Any]] = field(default_factory=dict)


class _Scrubber(logging.Filter):
    """Replaces every served token in uvicorn's log records (defence in depth: none is logged
    on purpose)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.tokens:
            text = record.getMessage()
            if any(token in text for token in self.tokens):
                for token in self.tokens:
                    text = text.replace(token, "***")
                record.msg, record.args = text, None
        return True


_SCRUBBER = _Scrubber()


class ChannelServer:
    """One HTTP(S) server, in a thread of the host process, serving any number of runs.

    `start()` binds (port 0: any free port) and returns once it accepts connections;
    `serve(key, channel, token)` adds a run under `/runs/<key>`; `stop()` ends it.
    """

    def __init__(
        self,
        bind: str = DEFAULT_BIND,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
        limit_concurrency: int = LIMIT_CONCURRENCY,
    ) -> None:
        self.bind_host, self.bind_port = parse_bind(bind)
        if bool(tls_cert) != bool(tls_key):
            raise ChannelServerError(
                "TLS needs both a certificate file and its key file (--channel-tls-cert and "
                "--channel-tls-key)."
            )
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.limit_concurrency = limit_concurrency
        self._runs: dict[str, _Run] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def port(self) -> int:
        """The port bound (the one chosen when asked for port 0)."""
        return self.bind_port

    @property
    def bind(self) -> str:
        """`HOST:PORT` as bound: what a restarted host binds again to keep its URLs."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The server's own address (a wildcard bind is advertised as loopback)."""
        host = self.bind_host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - naming the wildcard, not binding it
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- runs ---------------------------------------------------------------------------------

    def serve(
        self, key: str, channel: FileChannel, token: str, *, address: str | None = None
    ) -> str:
        """Serve `channel` under `/runs/<key>` to requests bearing `token`; return its URL
        (`address`, the base URL wrappers can reach, else the server's own)."""
        if not key or not set(key) <= _KEY_CHARACTERS or key.startswith("."):
            raise ChannelServerError(f"{key!r} cannot name a served channel: use [A-Za-z0-9._-].")
        self._runs[key] = _Run(key, channel, token.encode())
        _SCRUBBER.tokens.add(token)
        return f"{(address or self.base_url).rstrip('/')}/runs/{key}"

    def withdraw(self, key: str) -> None:
        """Stop serving one run (its requests get 404 from now on)."""
        run = self._runs.pop(key, None)
        if run is not None:
            _SCRUBBER.tokens.discard(run.token.decode())

    @property
    def keys(self) -> list[str]:
        return sorted(self._runs)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> ChannelServer:
        if self.running:
            return self
        import uvicorn

        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            if _SCRUBBER not in logger.filters:
                logger.addFilter(_SCRUBBER)
        self._socket = self._bind_socket()
        config = uvicorn.Config(
            self._app(),
            log_config=None,  # leave the host's logging as it is
            log_level="warning",
            access_log=False,  # never a line per request (paths, clients) in the host's output
            lifespan="off",
            http="h11",
            loop="asyncio",
            limit_concurrency=self.limit_concurrency,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
            h11_max_incomplete_event_size=64 * 1024,
            ssl_certfile=self.tls_cert,
            ssl_keyfile=self.tls_key,
            server_header=False,
        )
        try:
            config.load()
        except (OSError, ValueError) as exc:  # unreadable or mismatched TLS files
            self._close_socket()
            raise ChannelServerError(f"Could not load the channel's TLS files: {exc}.") from None
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run_server, name="jobfleet-channel-server", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout:
                self.stop()
                raise ChannelServerError(f"The channel server on {self.bind} did not start.")
            threading.Event().wait(0.01)
            waited += 0.01
        return self

    def _bind_socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then, and
        # without it every answer waited 40 ms for the client's delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        # A restarted host binds its run's port again at once, despite TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind_host, self.bind_port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise ChannelServerError(
                f"Could not serve the channel on {self.bind_host}:{self.bind_port}: "
                f"{exc.strerror or exc}."
            ) from None
        sock.set_inheritable(False)
        # Port 0 asked for any free port: from now on this server is bound to the one chosen,
        # and binds it again if restarted.
        self.bind_port = int(sock.getsockname()[1])
        return sock

    def _run_server(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            assert self._socket is not None
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException:  # the server thread must not die silently
            log.exception("the channel server on %s stopped", self.bind)
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop accepting, finish (or after 2 s drop) what is in flight, release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None
        self._server = None
        self._close_socket()

    def _close_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def __enter__(self) -> ChannelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the application ----------------------------------------------------------------------

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        def handle(
            endpoint: Callable[[Request], Awaitable[Any]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def wrapped(request: Request) -> Response:
                try:
                    result = await endpoint(request)
                except _Refused as refused:
                    return JSONResponse(
                        {"error": refused.message}, refused.status, headers=refused.headers
                    )
                return JSONResponse(result)

            return wrapped

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return JSONResponse(
                {"error": f"{exc.detail}: {request.method} {request.url.path}"},
                exc.status_code,
                headers=exc.headers,
            )

        async def server_error(request: Request, exc: Exception) -> Response:
            log.error("the channel server failed on %s: %s", request.url.path, exc)
            return JSONResponse({"error": "The channel server failed on this request."}, 500)

        routes = [
            Route("/runs/{key}/channel", handle(self._channel), methods=["GET"]),
            Route("/runs/{key}/specs/{tid:int}", handle(self._spec), methods=["GET"]),
            Route(
                "/runs/{key}/arrays/{array:int}/{batch:int}/{step:int}",
                handle(self._array_step),
                methods=["GET"],
            ),
            Route("/runs/{key}/events/{tid:int}/{writer}", handle(self._events), methods=["POST"]),
            Route("/runs/{key}/members/{member}", handle(self._member), methods=["GET"]),
            Route(
                "/runs/{key}/members/{member}/{mark}",
                handle(self._member_mark),
                methods=["PUT", "DELETE"],
            ),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Exception: server_error},
        )

    def _run(self, request: Request) -> _Run:
        """The run a request is for, once its token is checked (404, 401)."""
        run = self._runs.get(request.path_params["key"])
        if run is None:
            raise _Refused(404, "This server serves no such channel.")
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), run.token
        ):
            raise _Refused(
                401,
                "A request to a channel needs the run's token (Authorization: Bearer …).",
                headers={"WWW-Authenticate": 'Bearer realm="jobfleet-channel"'},
            )
        return run

    async def _channel(self, request: Request) -> Any:
        self._run(request)
        return {"protocol": PROTOCOL_VERSION}

    async def _spec(self, request: Request) -> Any:
        run = self._run(request)
        tid = request.path_params["tid"]
        path = os.path.join(run.channel.root, "specs", f"{tid}.json")
        try:
            return _read_json(path)
        except FileNotFoundError:
            raise _Refused(404, f"There is no spec for task instance {tid}.") from None

    async def _array_step(self, request: Request) -> Any:
        run = self._run(request)
        array, batch, step = (request.path_params[k] for k in ("array", "batch", "step"))
        data = self._array_file(run, array, batch)
        steps = data.get("steps") if isinstance(data, dict) else None
        tid = steps.get(str(step)) if isinstance(steps, dict) else None
        if not isinstance(tid, int) or isinstance(tid, bool):
            raise _Refused(404, f"Array {array} batch {batch} has no step {step}.")
        inline = data.get("specs")
        if isinstance(inline, dict) and str(step) in inline:
            return {"task_instance_id": tid, "spec": inline[str(step)]}
        path = os.path.join(run.channel.root, "specs", f"{tid}.json")
        try:
            spec = _read_json(path)
        except FileNotFoundError:
            spec = None
        return {"task_instance_id": tid, "spec": spec}

    def _array_file(self, run: _Run, array: int, batch: int) -> Any:
        """The array file, parsed once per version: the steps of a batch of 1,000 all read it."""
        path = os.path.join(run.channel.root, "arrays", f"{array}.{batch}.json")
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            run.arrays.pop((array, batch), None)
            raise _Refused(404, f"There is no step map for array {array} batch {batch}.") from None
        version = (stat.st_mtime_ns, stat.st_ino)
        cached = run.arrays.get((array, batch))
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            data = _read_json(path)
        except FileNotFoundError:
            raise _Refused(404, f"There is no step map for array {array} batch {batch}.") from None
        run.arrays[(array, batch)] = (version, data)
        return data

    def _member_key(self, request: Request) -> str:
        from jobfleet.core.channel.base import check_member_key

        try:
            return check_member_key(request.path_params["member"])
        except ChannelError as exc:
            raise _Refused(400, str(exc)) from None

    async def _member(self, request: Request) -> Any:
        """A packed member's marks (the pack worker's kill checks, the host's kill waits)."""
        run = self._run(request)
        member = self._member_key(request)
        return {
            "kill": run.channel.member_kill_requested(member),
            "running": run.channel.member_running(member),
        }

    async def _member_mark(self, request: Request) -> Any:
        """Set a member's kill request (PUT …/kill, the host's distributor) or a pack worker's
        running mark (PUT / DELETE …/running). Anyone with the run's token may: the same
        holders may already report any of the run's instances."""
        run = self._run(request)
        member = self._member_key(request)
        mark, method = request.path_params["mark"], request.method
        if mark == "kill" and method == "PUT":
            await asyncio.to_thread(run.channel.request_member_kill, member)
        elif mark == "running":
            await asyncio.to_thread(run.channel.mark_member_running, member, method == "PUT")
        else:
            raise _Refused(405, f"{method} of a member's {mark!r} is not a thing.")
        return {"member": member}

    async def _events(self, request: Request) -> Any:
        run = self._run(request)
        tid, writer = request.path_params["tid"], request.path_params["writer"]
        name = f"{tid}.{writer}.jsonl"
        if not writer or not set(writer) <= _KEY_CHARACTERS or writer.startswith("."):
            raise _Refused(400, f"{writer!r} is not a writer token.")
        body = await self._body(request)
        lines = _event_lines(body, tid, writer)
        durable = request.headers.get(_DURABLE_HEADER, "") == "1"
        path = os.path.join(run.channel.root, "events", name)
        state = run.writers.get((tid, writer))
        if state is None:
            state = run.writers.setdefault((tid, writer), _recover(path))
        async with state.lock:
            new = [(sequence, line) for sequence, line in lines if sequence > state.highest]
            if new:
                payload = b"".join(line for _, line in new)
                await asyncio.to_thread(_append, path, payload, state, durable)
                state.highest = new[-1][0]
            elif durable:
                await asyncio.to_thread(_sync, path)
        return {"stored": len(new), "duplicates": len(lines) - len(new), "highest": state.highest}

    async def _body(self, request: Request) -> bytes:
        from starlette.requests import ClientDisconnect

        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            raise _Refused(413, f"A request body may have at most {self.max_body} bytes.")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body:
                        raise _Refused(
                            413, f"A request body may have at most {self.max_body} bytes."
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refused(408, "The request body took too long to arrive.") from None
        except ClientDisconnect:
            raise _Refused(400, "The request body was cut off; nothing was stored.") from None
        if declared is not None and size != int(declared):
            raise _Refused(400, "The request body was cut off; nothing was stored.")
        return b"".join(chunks)


def _read_json(path: str) -> Any:
    with open(path, "rb") as stream:
        raw = stream.read()
    try:
        return json.loads(raw)
    except ValueError:
        raise _Refused(
            422,  # not retried: the host wrote it so, asking again cannot help
            f"The channel file {os.path.basename(path)} is not valid JSON.",
        ) from None


def _event_lines(body: bytes, tid: int, writer: str) -> list[tuple[int, bytes]]:
    """(sequence, line) of each event of a post, all checked before anything is stored."""
    if not body:
        raise _Refused(400, "An events post needs at least one event line.")
    if not body.endswith(b"\n"):
        raise _Refused(400, "The events post does not end with a newline: it was cut off.")
    found: list[tuple[int, bytes]] = []
    for number, line in enumerate(body.split(b"\n")[:-1], 1):
        try:
            event = Event.from_line(line)
        except ChannelError as exc:
            raise _Refused(400, f"Line {number} of the post is not an event: {exc}") from None
        if (event.task_instance_id, event.writer) != (tid, writer):
            raise _Refused(
                400,
                f"Line {number} names task instance {event.task_instance_id} and writer "
                f"{event.writer!r}, not those of the path.",
            )
        if found and event.sequence <= found[-1][0]:
            raise _Refused(400, f"Line {number} is out of sequence order.")
        found.append((event.sequence, line + b"\n"))
    return found


def _recover(path: str) -> _WriterState:
    """A writer's state from its events file: after a restart, what it already stored."""
    state = _WriterState()
    try:
        with open(path, "rb") as stream:
            content = stream.read()
    except FileNotFoundError:
        return state
    state.torn = bool(content) and not content.endswith(b"\n")
    for line in content.split(b"\n"):
        try:
            sequence = json.loads(line).get("sequence")
        except (ValueError, AttributeError):
            continue
        if isinstance(sequence, int) and sequence > state.highest:
            state.highest = sequence
    return state


def _append(path: str, payload: bytes, state: _WriterState, durable: bool) -> None:
    if state.torn:
        payload = b"\n" + payload
    created = not os.path.exists(path)
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        state.torn = True
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError("os.write wrote nothing")
            view = view[written:]
        state.torn = False
        if durable:
            os.fsync(fd)
    except OSError as exc:
        raise _Refused(503, f"The host could not store the events: {exc}.") from None
    finally:
        os.close(fd)
    if durable and created:
        _sync_directory(os.path.dirname(path))


def _sync(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_directory(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- one server per bind address in a host process --------------------------------------------


@dataclass
class ServedChannel:
    """A run's channel as served: what the distributor gets (`url`, `token`) and what a
    resumed host must bind again (`bind`)."""

    server: ChannelServer
    key: str
    url: str
    token: str

    @property
    def bind(self) -> str:
        return self.server.bind

    def close(self) -> None:
        """Stop serving this run; the server stops with its last run."""
        self.server.withdraw(self.key)
        with _LOCK:
            if not self.server.keys:
                self.server.stop()
                if _SERVERS.get(_server_key(self.server)) is self.server:
                    del _SERVERS[_server_key(self.server)]


_LOCK = threading.Lock()
_SERVERS: dict[tuple[str, int, str | None], ChannelServer] = {}


def _server_key(server: ChannelServer) -> tuple[str, int, str | None]:
    return (server.bind_host, server.port, server.tls_cert)


def serve_channel(
    channel: FileChannel,
    key: str,
    *,
    bind: str = DEFAULT_BIND,
    address: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> ServedChannel:
    """Serve a run's file channel over HTTP(S), on this process's server for `bind` (started
    if needed; port 0 shares any server on that host), with the token of its directory."""
    host, port = parse_bind(bind)
    if address is not None:
        check_address(address, tls=bool(tls_cert))
    token = load_or_create_token(channel.root)
    with _LOCK:
        server = next(
            (
                found
                for (h, p, cert), found in _SERVERS.items()
                if h == host and (p == port or port == 0) and cert == tls_cert and found.running
            ),
            None,
        )
        if server is None:
            server = ChannelServer(bind, tls_cert=tls_cert, tls_key=tls_key)
            # Served before the first request is accepted: the wrappers of a resumed run are
            # waiting for this port, and their reports queue in the socket's backlog while the
            # server starts. Answered "no such channel", they would give their reports up.
            server.serve(key, channel, token, address=address)
            server.start()
            _SERVERS[_server_key(server)] = server
        url = server.serve(key, channel, token, address=address)  # again, with the port bound
    return ServedChannel(server, key, url, token)


def check_address(address: str, *, tls: bool) -> None:
    """Refuse an advertised channel address that wrappers could not use."""
    parts = urlsplit(address)
    scheme = "https" if tls else "http"
    if parts.scheme != scheme or not parts.hostname:
        raise ChannelServerError(
            f"The channel address {address!r} must be a {scheme}:// URL (HOST and port the "
            "worker nodes can reach)" + (", as the channel serves TLS." if tls else ".")
        )
    if parts.username is not None or parts.password is not None or parts.query:
        raise ChannelServerError(
            f"The channel address {address!r} must carry no credentials or query."
        )
