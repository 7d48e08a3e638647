"""Serving the UI with uvicorn: the bind address, the token, and a server in a thread.

Loopback (127.0.0.1) by default. Binding any other address needs a token, made here and
printed once in the URL, unless `open_access` says the server is open to anyone who can reach
it, which `jobfleet ui` then says loudly.
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from jobfleet.core.errors import JobfleetError
from jobfleet.core.host.ui.security import TOKEN_PARAMETER, is_loopback

if TYPE_CHECKING:
    from jobfleet.core.host.ledger import Ledger

DEFAULT_BIND: Final = "127.0.0.1:8765"


class UiError(JobfleetError):
    """The UI cannot be served as asked (a bad bind address, a port in use)."""


def parse_bind(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[::1]:PORT` for IPv6); a clear error otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UiError(
            f"--bind {text!r} must be HOST:PORT, e.g. 127.0.0.1:8765, 127.0.0.1:0 (any free "
            "port) or 0.0.0.0:8765 (every interface: needs the token)."
        )
    return host, int(port)


@dataclass
class UiServer:
    """The UI of `ledger` on `bind`, served by uvicorn in a thread (`start`/`stop`) or in the
    calling thread (`serve_forever`)."""

    ledger: Ledger
    bind: str = DEFAULT_BIND
    open_access: bool = False
    """Off loopback, serve without a token (anyone who can reach the port sees every run)."""
    token: str | None = None
    _socket: socket.socket | None = field(default=None, init=False, repr=False)
    _server: Any = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.host, self.port = parse_bind(self.bind)
        self.loopback = is_loopback(self.host)
        if self.token is None and not self.loopback and not self.open_access:
            self.token = secrets.token_urlsafe(32)

    @property
    def url(self) -> str:
        """The address to open, with the token when one is needed (print it once)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):  # noqa: S104 (a name for the URL, not a bind)
            host = socket.gethostname()
        base = f"http://{host}:{self.port}/"
        return f"{base}?{TOKEN_PARAMETER}={quote(self.token)}" if self.token else base

    def _bind_socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise UiError(f"Cannot listen on {self.bind}: {exc.strerror or exc}.") from None
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        return sock

    def _config(self) -> Any:
        import uvicorn

        from jobfleet.core.host.ui.app import create_app

        app = create_app(self.ledger, token=self.token, loopback_only=self.loopback)
        return uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,  # the token may be in a URL; the request lines are not logged
            lifespan="off",
            http="h11",
            loop="asyncio",
            timeout_keep_alive=30,
            server_header=False,
        )

    def bind_now(self) -> None:
        """Listen (port 0: any free port), so that `url` names the port before serving."""
        if self._socket is None:
            self._socket = self._bind_socket()

    def serve_forever(self) -> None:
        import uvicorn

        self.bind_now()
        assert self._socket is not None
        self._server = uvicorn.Server(self._config())
        self._server.run(sockets=[self._socket])

    def start(self, timeout: float = 10.0) -> UiServer:
        import uvicorn

        self.bind_now()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="jobfleet-ui",
            daemon=True,
        )
        self._thread.start()
        ready = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout:
                self.stop()
                raise UiError(f"The ui server on {self.bind} did not start.")
            ready.wait(0.01)
            waited += 0.01
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
