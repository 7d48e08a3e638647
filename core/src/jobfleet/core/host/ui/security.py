"""The UI's guards: an access token off loopback, the Host header on loopback, and headers
that keep the pages from loading or sending anything elsewhere.

A pure ASGI middleware (no buffering of the log files it streams).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE: Final = "jobfleet_ui_token"
TOKEN_PARAMETER: Final = "token"  # noqa: S105 (a parameter name)
# No script, style, image or connection from anywhere but this server; no framing; no form
# posts anywhere. The page's own script is a file of this server (no inline script).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Refuses requests without the token (when one is set) or, on loopback, whose Host is not
    a loopback name (a page elsewhere that rebinds its DNS name to 127.0.0.1 gets nothing)."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope.get("headers", [])}
        if self.loopback_only and not is_loopback(_host_name(headers.get(b"host", b""))):
            await _plain(send, 421, "This jobfleet ui answers only on a loopback host name.")
            return
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            given = dict(query).get(TOKEN_PARAMETER)
            if given is not None:
                if not self._matches(given.encode()):
                    await _plain(send, 401, "The token in the URL is not this server's.")
                    return
                # Into a cookie, and out of the address bar (and out of the history).
                kept = urlencode([(k, v) for k, v in query if k != TOKEN_PARAMETER])
                path = quote(scope.get("root_path", "") + scope["path"])
                location = path + (f"?{kept}" if kept else "")
                cookie = f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict"
                await _redirect(send, location, cookie)
                return
            if not self._authorised(headers):
                await _plain(
                    send, 401, "This jobfleet ui needs its token: open the URL it printed."
                )
                return
        await self.app(scope, receive, _with_headers(send))

    def _matches(self, given: bytes) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given, self.token)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        authorization = headers.get(b"authorization", b"")
        if authorization.lower().startswith(b"bearer ") and self._matches(authorization[7:]):
            return True
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header: as if there were none
            return False
        found = cookies.get(COOKIE)
        return found is not None and self._matches(found.value.encode())


def _host_name(host: bytes) -> str:
    text = host.decode("latin-1").strip()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {key.lower() for key, _ in message.get("headers", [])}
            extra = [(key, value) for key, value in SECURITY_HEADERS if key not in present]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return sending


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, cookie: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1", "replace")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"content-length", b"0"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
