"""The few HTTP/1.1 exchanges the wrapper has with the host's channel server, on a bare socket.

`http.client` imports `email` (for header parsing) and `ssl` at module level: ≈ 20 ms and
6 MiB for every wrapper of an `http:` channel, before every task. The wrapper sends a handful of
small requests to one server, ours (`jobfleet.core.host.channel_server`), so `PlainConnection`
speaks just that: one request at a time on a keep-alive connection, bodies framed by
Content-Length (or chunked, or closed, as HTTP/1.1 allows a server to answer). `https:` goes
through `TlsConnection`, which uses `http.client` and `ssl` (imported then, not before).

Both answer `exchange()` with a `Reply`; a connection that broke, or an answer that is not
HTTP, raises OSError (`BadReply` for the latter), which the caller retries.
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["BadReply", "PlainConnection", "Reply", "TlsConnection"]

_MAX_LINE = 65536  # as http.client: a longer status or header line is no answer of ours
_MAX_HEADERS = 100
_CHUNK = 65536


class BadReply(OSError):
    """The server's answer is not HTTP/1.x as this client reads it (or the connection ended
    inside it)."""


class Reply:
    """One answer: its status, headers (names in lower case), body, and whether the server
    closes the connection after it."""

    __slots__ = ("body", "headers", "status", "will_close")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, will_close: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.will_close = will_close


class PlainConnection:
    """One keep-alive HTTP/1.1 connection over TCP, opened on the first exchange."""

    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        self.host = host
        self.port = 80 if port is None else port
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = b""
        # The Host header, as http.client writes it: an IPv6 address in brackets, the port
        # only when it is not the default.
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if self.port == 80 else f"{name}:{self.port}"

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._buffer = b""

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Reply:
        """Send one request and read its whole answer; OSError if the connection fails."""
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), self.timeout)
            self._buffer = b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += ["Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write for head and body: a small request goes in one segment.
        self._socket.sendall(head + body if body else head)
        return self._read_reply(method)

    # -- reading ------------------------------------------------------------------------------

    def _read_reply(self, method: str) -> Reply:
        while True:
            status_line = self._line()
            version, _, rest = status_line.partition(" ")
            code, _, _reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
                raise BadReply(f"the server's answer is not HTTP/1.x: {status_line[:80]!r}")
            status = int(code)
            headers = self._headers()
            if status >= 200:
                break
            # 1xx (100 Continue, 103): informational, the real answer follows.
        will_close = version == "HTTP/1.0" or "close" in headers.get("connection", "").lower()
        if version == "HTTP/1.0" and "keep-alive" in headers.get("connection", "").lower():
            will_close = False
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            length = headers["content-length"].strip()
            if not length.isdigit():
                raise BadReply(f"the server sent a Content-Length of {length[:40]!r}")
            body = self._exactly(int(length))
        else:  # framed by the end of the connection
            body = self._rest()
            will_close = True
        if will_close:
            self.close()
        return Reply(status, headers, body, will_close)

    def _fill(self) -> bool:
        """Read more into the buffer; False at the end of the connection."""
        assert self._socket is not None
        data = self._socket.recv(_CHUNK)
        self._buffer += data
        return bool(data)

    def _line(self) -> str:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                return line.decode("latin-1")
            if len(self._buffer) > _MAX_LINE:
                raise BadReply("the server sent a line longer than 64 KiB")
            if not self._fill():
                raise BadReply("the server closed the connection without a complete answer")

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._line()
            if not line:
                return headers
            name, colon, value = line.partition(":")
            if not colon:
                raise BadReply(f"the server sent a header line without a colon: {line[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raise BadReply(f"the server sent more than {_MAX_HEADERS} headers")

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise BadReply("the server closed the connection inside an answer's body")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _rest(self) -> bytes:
        while self._fill():
            pass
        data, self._buffer = self._buffer, b""
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._line().partition(";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadReply(f"the server sent a chunk size of {size_text[:40]!r}") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise BadReply("the server sent a chunk without its closing CRLF")


class TlsConnection:
    """`https:`: the same exchanges through `http.client` over `ssl` (imported here only)."""

    def __init__(self, host: str, port: int | None, timeout: float, cafile: str | None) -> None:
        import http.client
        import ssl

        self._http_client = http.client
        context = ssl.create_default_context(cafile=cafile)
        self._connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)

    def close(self) -> None:
        self._connection.close()

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Reply:
        try:
            self._connection.request(method, path, body=body, headers=dict(headers))
            response = self._connection.getresponse()
            raw = response.read()
        except self._http_client.HTTPException as exc:  # not an OSError: say it as one
            self.close()
            raise BadReply(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        found = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, found, raw, response.will_close)
