"""HTTP on 127.0.0.1 for the master and the agents: request dispatch, request log, internal-error
capture, and event streams (RecordIO records, one per HTTP chunk, through a bounded queue)."""

from __future__ import annotations

import contextlib
import json
import queue
import select
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

MAX_BODY = 4 * 1024 * 1024
STREAM_QUEUE = 10_000


def recordio(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":")).encode()
    return str(len(data)).encode() + b"\n" + data


@dataclass
class Response:
    code: int
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


class Stream:
    """One subscriber's event stream. `send` never blocks: an overflowing queue cuts the stream
    (the subscriber must resubscribe), as a connection that stops reading would."""

    def __init__(self, stream_id: str, maxsize: int = STREAM_QUEUE) -> None:
        self.stream_id = stream_id
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize)
        self.closed = False
        self.cut = False
        self.overflowed = False
        self.ended = threading.Event()
        self.on_close: Callable[[Stream], None] | None = None

    def send(self, event: dict[str, Any]) -> bool:
        if self.closed:
            return False
        try:
            self._q.put_nowait(recordio(event))
        except queue.Full:
            self.overflowed = True
            self.cut_now()
            return False
        return True

    def finish(self) -> None:
        """End the stream after the events already queued (terminating chunk)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._q.put_nowait(None)
        except queue.Full:
            self.cut = True

    def cut_now(self) -> None:
        """Drop the connection at once, as a network failure would."""
        self.closed = True
        self.cut = True
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(None)

    def next(self, timeout: float) -> bytes | bool | None:
        """A record, None at the end, False when nothing came within timeout."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return False


@dataclass
class StreamResponse:
    stream: Stream
    headers: dict[str, str] = field(default_factory=dict)


class Service(Protocol):
    internal_errors: list[str]
    stopping: bool

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> Response | StreamResponse: ...

    def log_request(self, method: str, path: str, headers: Any, body: bytes) -> None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: Service


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        service = self.server.service
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raise HttpError(
                    411, "chunked request bodies are not supported; send Content-Length"
                )
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise HttpError(400, "invalid Content-Length") from None
            if length < 0:
                raise HttpError(400, "invalid Content-Length")
            if length > MAX_BODY:
                raise HttpError(413, "request entity too large")
            body = self.rfile.read(length) if length else b""
        except HttpError as e:
            self._send(Response(e.code, e.message, e.headers))
            self.close_connection = True
            return
        try:
            service.log_request(method, self.path, self.headers, body)
            response = service.handle(method, self.path, self.headers, body)
        except HttpError as e:
            response = Response(e.code, e.message, e.headers)
        except Exception as e:  # a bug of the emulator: answer 500, keep serving, fail the test
            service.internal_errors.append(traceback.format_exc())
            response = Response(500, f"emulator internal error: {e!r}")
        if isinstance(response, StreamResponse):
            self._stream(response)
        else:
            self._send(response)

    def _send(self, response: Response) -> None:
        body = response.body
        headers = dict(response.headers)
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            if data:
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = body
        self.send_response(response.code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, response: StreamResponse) -> None:
        stream = response.stream
        service = self.server.service
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Mesos-Stream-Id", stream.stream_id)
            for k, v in response.headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            while not stream.cut and not service.stopping:
                item = stream.next(0.1)
                if item is False:
                    if self._client_gone():
                        break
                    continue
                if item is None or stream.cut:
                    if not stream.cut:
                        self.wfile.write(b"0\r\n\r\n")
                    break
                assert isinstance(item, bytes)
                self.wfile.write(f"{len(item):x}\r\n".encode() + item + b"\r\n")
        except OSError:
            pass
        finally:
            stream.closed = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            stream.ended.set()
            if stream.on_close is not None:
                try:
                    stream.on_close(stream)
                except Exception:
                    service.internal_errors.append(traceback.format_exc())


class HttpServer:
    def __init__(self, service: Service, name: str) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.service = service
        self.port: int = self.httpd.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"mesos-emulator-{name}-http",
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def parse_json(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A call's JSON body (400 when malformed, 415 for protobuf, which is not emulated)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/x-protobuf":
        raise HttpError(415, "Unsupported 'Content-Type': only application/json is emulated")
    if ctype != "application/json":
        raise HttpError(
            415,
            f"Expecting 'Content-Type' of application/json or application/x-protobuf"
            f" (got '{ctype}')",
        )
    try:
        call = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HttpError(400, f"Failed to parse body into Call: {e}") from None
    if not isinstance(call, dict):
        raise HttpError(400, "Failed to parse body into Call: not a JSON object")
    return call
