"""HTTP on 127.0.0.1: authentication, request counting, fault injection, chunked watch streams."""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .api import Response, route, verb_of
from .store import ApiError
from .util import status_body

if TYPE_CHECKING:
    from . import KubeEmulator

MAX_BODY = 8 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emu: KubeEmulator


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

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "request entity too large", reason="RequestEntityTooLarge")
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emu
        try:
            body = self._read_body()
        except ApiError as e:
            self._send(Response(e.code, e.body()))
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        r = route(parts.path)
        emu._log_request(method, self.path, self.headers, body)
        try:
            if r is None:
                raise ApiError(404, "the server could not find the requested resource", details={})
            verb = verb_of(method, r, query)
            emu._count(verb, r.resource)
            auth = self.headers.get("Authorization", "")
            expected = f"Bearer {emu.token}"
            if not hmac.compare_digest(auth.encode(), expected.encode()):
                raise ApiError(401, "Unauthorized")
            emu._inject_faults(verb, r.resource)
            response = emu.api.handle(
                method, r, verb, query, body, self.headers.get("Content-Type", "application/json")
            )
        except ApiError as e:
            response = Response(e.code, e.body(), dict(e.headers))
        except Exception as e:  # a bug of the emulator: answer 500 and keep serving
            import traceback

            emu.internal_errors.append(traceback.format_exc())
            response = Response(500, status_body(500, f"emulator internal error: {e!r}"))
        self._send(response)

    def _send(self, response: Response) -> None:
        body = response.body
        headers = dict(response.headers)
        if body is not None and not isinstance(body, dict | str | bytes):
            self._stream(response.code, body, headers)
            return
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            headers.setdefault("Content-Type", "text/plain")
        else:
            data = body or b""
        self.send_response(response.code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _stream(self, code: int, lines: Any, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        emu = self.server.emu
        with emu._watch_lock:
            emu._open_watches += 1
        try:
            self.wfile.flush()
            for line in lines:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()
            with emu._watch_lock:
                emu._open_watches -= 1
            self.close_connection = True


class HttpServer:
    def __init__(self, emu: KubeEmulator) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.emu = emu
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kube-emulator-http",
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
