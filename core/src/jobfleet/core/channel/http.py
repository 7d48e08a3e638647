"""The `http://` and `https://` transport, as the worker-node wrapper sees it: the stdlib only.

Pods on Kubernetes (and nodes of any cluster without a shared file system) cannot read the
host's channel directory, so the host serves it over HTTP (`jobfleet.core.host.channel_server`)
and the wrapper reads its spec and posts its events with this client. The host itself keeps
the channel as a `FileChannel` on its own disk; this class is only the wrapper's side of it,
so the host-side methods (`put_spec`, `read_events`, …) refuse.

Protocol (paths under the channel URL, e.g. `http://10.0.0.5:8765/runs/run-3-TOKEN`):

    GET  /channel                            {"protocol": 1}
    GET  /specs/<task_instance_id>           a TaskSpec.to_dict()
    GET  /arrays/<array>/<batch>/<step>      {"task_instance_id": N, "spec": {...} or null}
    POST /events/<task_instance_id>/<writer> event lines (Event.to_line()), in sequence order
    GET  /members/<array>.<batch>.<step>     {"kill": bool, "running": bool}  (packed members)
    PUT  /members/<key>/kill                 ask the pack worker to kill (or skip) that member
    PUT, DELETE /members/<key>/running       the pack worker runs that member / no longer

Every request carries `Authorization: Bearer TOKEN`, the run's token, which the wrapper reads
from `$JOBFLEET_CHANNEL_TOKEN` or from the file `$JOBFLEET_CHANNEL_TOKEN_FILE` names (never
from the URL or the command line). See docs/channel.md.

Kept light: the wrapper imports this module only for an http(s) URL, and it imports nothing
beyond the standard library (no server library). For `http:` not even `http.client`, `ssl` or
`urllib.parse`: the requests go through `http_wire.PlainConnection` on a bare socket.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

from jobfleet.core.errors import ChannelError, ProtocolVersionError
from jobfleet.core.wrapper import (
    CHANNEL_CA_VARIABLE,
    CHANNEL_TOKEN_FILE_VARIABLE,
    CHANNEL_TOKEN_VARIABLE,
)

from .base import Channel, EventCursor, EventWriter, check_member_key
from .http_wire import BadReply, PlainConnection, TlsConnection
from .messages import PROTOCOL_VERSION, Event, TaskSpec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the worker-node wrapper's start path
    from collections.abc import Mapping
    from typing import Any, Final

__all__ = [
    "DURABLE_HEADER",
    "LONGEST_PAUSE",
    "RETRY_VARIABLE",
    "TRANSPORTS",
    "HttpChannel",
    "HttpEventWriter",
    "read_token",
]

TRANSPORTS: Final = ("http", "https")

DURABLE_HEADER: Final = "X-Jobfleet-Durable"
"""`1` on an events post: the server fsyncs the events file before it answers."""

RETRY_VARIABLE: Final = "JOBFLEET_CHANNEL_RETRY_SECONDS"
"""How long (seconds) a request keeps being retried while the host is unreachable or busy."""

TIMEOUT_VARIABLE: Final = "JOBFLEET_CHANNEL_TIMEOUT"
"""Seconds one request may take (connecting, sending, waiting for the answer)."""

DEFAULT_RETRY_SECONDS: Final = 300.0
DEFAULT_TIMEOUT: Final = 30.0
_FIRST_PAUSE: Final = 0.1
LONGEST_PAUSE: Final = 5.0
"""A wrapper that cannot reach the host tries again at least this often (seconds): a host that
comes back hears from every live wrapper within about this long."""
_MAX_POST: Final = 512 * 1024
"""Buffered events are posted in bodies of at most this many bytes (the server takes 1 MiB)."""

_RETRIED_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


def read_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The channel token: `$JOBFLEET_CHANNEL_TOKEN`, else the content of the file
    `$JOBFLEET_CHANNEL_TOKEN_FILE` names (a Kubernetes Secret mounted as a volume), else None."""
    environ = os.environ if environ is None else environ
    token = environ.get(CHANNEL_TOKEN_VARIABLE, "").strip()
    if token:
        return token
    path = environ.get(CHANNEL_TOKEN_FILE_VARIABLE, "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            token = stream.read().strip()
    except OSError as exc:
        raise ChannelError(
            f"Could not read the channel token from {path} (${CHANNEL_TOKEN_FILE_VARIABLE}): "
            f"{exc.strerror or exc}."
        ) from None
    if not token:
        raise ChannelError(
            f"The channel token file {path} (${CHANNEL_TOKEN_FILE_VARIABLE}) is empty."
        )
    return token


def _seconds(variable: str, default: float) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ChannelError(f"${variable} must be a number of seconds, not {text!r}.") from None
    if not 0 <= value < float("inf"):
        raise ChannelError(f"${variable} must be 0 or more seconds, not {text!r}.")
    return value


class _Refused(ChannelError):
    """The server answered with a status that retrying cannot change."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Connection:
    """One keep-alive connection to the host, with retries, backoff and jitter.

    Not thread-safe on its own: a channel guards its connection with a lock, a writer uses
    its own under the writer's lock.
    """

    def __init__(self, url: str, base_path: str, token: str, retry_seconds: float) -> None:
        parts = _split(url)
        self.url = url
        self.scheme = parts.scheme
        self.host: str = parts.hostname or ""
        self.port: int | None = parts.port
        self.base_path = base_path
        self._token = token
        self.retry_seconds = retry_seconds
        self.timeout = _seconds(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT)
        self._connection: PlainConnection | TlsConnection | None = None

    def _open(self) -> PlainConnection | TlsConnection:
        if self._connection is None:
            if self.scheme == "https":
                cafile = os.environ.get(CHANNEL_CA_VARIABLE) or None
                self._connection = TlsConnection(self.host, self.port, self.timeout, cafile)
            else:
                self._connection = PlainConnection(self.host, self.port, self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry_seconds: float | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of a 2xx or 404 answer; ChannelError for anything else.

        Connection errors, timeouts, 408, 429 and 5xx are retried (the same request, so an
        events post keeps its sequence numbers) until `retry_seconds` have passed.
        """
        budget = self.retry_seconds if retry_seconds is None else retry_seconds
        deadline = time.monotonic() + budget
        sent = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            sent["Content-Type"] = "application/x-ndjson"
        sent.update(headers or {})
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                reply = self._open().exchange(method, self.base_path + path, body, sent)
                raw = reply.body
                if reply.will_close:
                    self.close()
            except OSError as exc:  # BadReply included: an answer that is not HTTP
                self.close()
                if _is_certificate_error(exc):
                    raise ChannelError(
                        f"Could not {what}: the host's certificate at {self.url} was refused "
                        f"({exc}). Give the CA that signed it in ${CHANNEL_CA_VARIABLE}."
                    ) from None
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = reply.status
                if 200 <= status < 300 or status == 404:
                    return status, _decode(raw)
                problem = f"HTTP {status}: {_server_message(raw)}"
                if status not in _RETRIED_STATUSES:
                    hint = (
                        f" Check ${CHANNEL_TOKEN_VARIABLE} (or ${CHANNEL_TOKEN_FILE_VARIABLE})."
                        if status in (401, 403)
                        else ""
                    )
                    raise _Refused(
                        f"Could not {what}: the host at {self.url} refused ({problem}).{hint}",
                        status,
                    )
                wait = _retry_after(reply.headers.get("retry-after"))
            pause = min(LONGEST_PAUSE, _FIRST_PAUSE * 2 ** min(attempt - 1, 16))
            pause = pause / 2 + random.uniform(0, pause / 2)  # noqa: S311 - jitter, not secrecy
            if wait is not None:
                pause = max(pause, min(wait, LONGEST_PAUSE))
            if time.monotonic() + pause > deadline:
                raise ChannelError(
                    f"Could not {what}: the host at {self.url} did not answer usefully in "
                    f"{budget:g} s ({attempt} attempt(s)); the last: {problem}. "
                    f"${RETRY_VARIABLE} sets how long to keep trying."
                )
            time.sleep(pause)


def _is_certificate_error(exc: BaseException) -> bool:
    import sys

    ssl = sys.modules.get("ssl")
    if isinstance(exc, BadReply) and exc.__cause__ is not None:
        exc = exc.__cause__
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _server_message(raw: bytes) -> str:
    data = _decode(raw)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return raw[:200].decode("utf-8", "replace").strip() or "no message"


class _Parts:
    """What this module reads of a URL: `urlsplit`'s fields of the same names."""

    __slots__ = ("fragment", "hostname", "password", "path", "port", "query", "scheme", "username")

    def __init__(self, scheme: str, hostname: str, port: int | None, path: str) -> None:
        self.scheme = scheme
        self.hostname = hostname
        self.port = port
        self.path = path
        self.query = self.fragment = ""
        self.username: str | None = None
        self.password: str | None = None


_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_PATH_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/%!$&'()*+,;=:@"
)


def _split(url: str) -> Any:
    """`urlsplit(url)` with the scheme and host in lower case, read by hand for the plain form
    `http(s)://host[:port][/path]` (a name or IPv4 host, a decimal port, a path of URL
    characters): urllib.parse would cost the wrapper `ipaddress` too. Anything else (IPv6,
    user info, a query, odd characters) is left to urllib.parse, which checks it."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    host, colon, port_text = authority.partition(":")
    host = host.lower()
    if (
        sep
        and scheme.lower() in TRANSPORTS
        and host
        and set(host) <= _HOST_CHARACTERS
        and (not colon or (port_text.isascii() and port_text.isdigit()))
        and set(path) <= _PATH_CHARACTERS
    ):
        port = int(port_text) if colon else None
        if port is None or port <= 65535:
            return _Parts(scheme.lower(), host, port, slash + path)
    from urllib.parse import urlsplit

    return urlsplit(url)


def _quote(text: str) -> str:
    """`urllib.parse.quote(text, safe="")`: every byte but the unreserved ones %-escaped."""
    unreserved = _UNRESERVED
    return "".join(
        chr(byte) if chr(byte) in unreserved else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _check_url(url: str) -> tuple[str, str]:
    """(URL without a trailing slash, its path) of an http(s) channel URL; refuse odd ones."""
    parts = _split(url)
    if parts.scheme.lower() not in TRANSPORTS or not parts.hostname:
        raise ChannelError(
            f"{url!r} is not an http channel URL; write it as http://HOST:PORT/PATH."
        )
    if parts.username is not None or parts.password is not None:
        raise ChannelError(
            "An http channel URL must not carry credentials: the token travels in "
            f"${CHANNEL_TOKEN_VARIABLE} or ${CHANNEL_TOKEN_FILE_VARIABLE}, never in the URL."
        )
    if parts.query or parts.fragment:
        raise ChannelError(f"The channel URL {url!r} has a query or fragment, which means nothing.")
    try:
        _ = parts.port
    except ValueError:
        raise ChannelError(f"The channel URL {url!r} has a port that is not a number.") from None
    path = parts.path.rstrip("/")
    return url.rstrip("/"), path


def _check_id(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ChannelError(f"The {what} must be a non-negative integer, not {value!r:.80}.")


class HttpEventWriter(EventWriter):
    """Posts the events of one wrapper run, in sequence order, buffering what could not go.

    An event whose post fails (the host is unreachable for longer than the retry budget) stays
    in the buffer, with its sequence number, and goes first with the next send: the server
    drops what it already has (same writer, sequence already stored), so a host restart loses
    and duplicates nothing.
    """

    def __init__(self, connection: _Connection, task_instance_id: int) -> None:
        super().__init__(task_instance_id)
        self._connection = connection
        self._pending: list[bytes] = []
        self._path = f"/events/{task_instance_id}/{_quote(self.writer)}"

    def _deliver(self, event: Event, line: bytes, *, durable: bool) -> None:
        self._pending.append(line)
        self._flush(durable=durable, what=f"send the {event.kind.value} event")

    def _flush(self, *, durable: bool, what: str, retry_seconds: float | None = None) -> None:
        full = f"{what} of task instance {self.task_instance_id}"
        while self._pending:
            count, size = 0, 0
            for line in self._pending:
                if count and size + len(line) > _MAX_POST:
                    break
                count, size = count + 1, size + len(line)
            body = b"".join(self._pending[:count])
            headers = {DURABLE_HEADER: "1"} if durable else {}
            try:
                status, answer = self._connection.request(
                    "POST",
                    self._path,
                    what=full,
                    body=body,
                    headers=headers,
                    retry_seconds=retry_seconds,
                )
            except _Refused:
                # Refused for what it is (malformed, too large): sending it again cannot help.
                del self._pending[:count]
                raise
            if status == 404:
                del self._pending[:count]
                raise ChannelError(
                    f"Could not {full}: the host at {self._connection.url} does not serve this "
                    f"channel ({_server_message(json.dumps(answer).encode())})."
                )
            del self._pending[:count]

    def _release(self) -> None:
        try:
            if self._pending:  # a last try for what a failed send left behind
                self._flush(durable=True, what="send the buffered events", retry_seconds=10.0)
        except ChannelError:
            pass
        finally:
            self._connection.close()


class HttpChannel(Channel):
    """The wrapper's side of a channel the host serves over HTTP(S); see the module docstring."""

    def __init__(
        self, url: str, *, token: str | None = None, retry_seconds: float | None = None
    ) -> None:
        self._url, self._base_path = _check_url(url)
        token = token if token is not None else read_token()
        if not token:
            raise ChannelError(
                f"The http channel {self._url} needs the run's token: set "
                f"${CHANNEL_TOKEN_VARIABLE}, or ${CHANNEL_TOKEN_FILE_VARIABLE} to a file "
                "holding it."
            )
        self._token = token
        self._retry_seconds = (
            _seconds(RETRY_VARIABLE, DEFAULT_RETRY_SECONDS)
            if retry_seconds is None
            else retry_seconds
        )
        self._lock = threading.Lock()
        self._connection = self._new_connection()
        self._check_protocol()

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> HttpChannel:
        """The transport factory `open_channel` calls for `http:` and `https:` URLs."""
        if create:
            raise ChannelError(
                f"An http channel ({url}) is served by the host from a file channel on its own "
                "disk (jobfleet.core.host.channel_server); it cannot be created by URL."
            )
        return cls(url)

    def _new_connection(self) -> _Connection:
        return _Connection(self._url, self._base_path, self._token, self._retry_seconds)

    def _get(self, path: str, what: str) -> tuple[int, Any]:
        with self._lock:
            return self._connection.request("GET", path, what=what)

    def _check_protocol(self) -> None:
        status, data = self._get("/channel", "open the channel")
        if status == 404:
            raise ChannelError(f"The host at {self._url} serves no such channel.")
        version = data.get("protocol") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise ChannelError(f"The host at {self._url} does not say which protocol it speaks.")
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"The channel {self._url} speaks protocol version {version}, but this "
                f"release of jobfleet speaks version {PROTOCOL_VERSION}. Run the same jobfleet "
                "release on the host and the worker nodes."
            )

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"HttpChannel({self._url!r})"

    # Host side: the host keeps the channel as a FileChannel and serves it.

    def _host_only(self, operation: str) -> ChannelError:
        return ChannelError(
            f"{operation} is the host's: it keeps an http channel in a file channel on its own "
            f"disk and serves it; a wrapper of {self._url} can only read specs and send events."
        )

    def put_spec(self, spec: TaskSpec) -> None:
        raise self._host_only("put_spec")

    def put_array(self, array_id: int, batch_number: int, steps: Mapping[int, int]) -> None:
        raise self._host_only("put_array")

    def read_events(self, cursor: EventCursor | None = None) -> tuple[list[Event], EventCursor]:
        raise self._host_only("read_events")

    def remove(self, task_instance_id: int) -> None:
        raise self._host_only("remove")

    def remove_spec(self, task_instance_id: int) -> None:
        raise self._host_only("remove_spec")

    def remove_array(self, array_id: int, batch_number: int) -> None:
        raise self._host_only("remove_array")

    # Worker side.

    def get_spec(self, task_instance_id: int) -> TaskSpec:
        tid = _check_id(task_instance_id, "task instance id")
        status, data = self._get(f"/specs/{tid}", f"read the spec of task instance {tid}")
        if status == 404:
            raise ChannelError(f"There is no spec for task instance {tid} in {self._url}.")
        return TaskSpec.from_dict(data)

    def _array_step(self, array_id: int, batch_number: int, step: int) -> dict[str, Any]:
        array = _check_id(array_id, "array id")
        batch = _check_id(batch_number, "batch number")
        number = _check_id(step, "array step")
        status, data = self._get(
            f"/arrays/{array}/{batch}/{number}",
            f"read step {number} of array {array} batch {batch}",
        )
        if status == 404:
            raise ChannelError(
                f"Array {array} batch {batch} in {self._url} has no step {number} "
                f"({_server_message(json.dumps(data).encode())})."
            )
        if not isinstance(data, dict):
            raise ChannelError(f"The host at {self._url} sent an array step that is not an object.")
        return data

    def resolve_array_step(self, array_id: int, batch_number: int, step: int) -> int:
        data = self._array_step(array_id, batch_number, step)
        return _check_id(data.get("task_instance_id"), f"task instance id of step {step}")

    def get_array_step(self, array_id: int, batch_number: int, step: int) -> TaskSpec:
        data = self._array_step(array_id, batch_number, step)
        spec = data.get("spec")
        if spec is None:
            tid = _check_id(data.get("task_instance_id"), f"task instance id of step {step}")
            return self.get_spec(tid)
        return TaskSpec.from_dict(spec)

    # Packed members (see `Channel`): the server keeps them as the file channel's marker files.

    supports_member_kills = True

    def _member(self, member: str) -> dict[str, Any]:
        key = check_member_key(member)
        status, data = self._get(f"/members/{key}", f"read the state of member {key}")
        if status == 404 or not isinstance(data, dict):
            raise ChannelError(f"The host at {self._url} does not know packed members.")
        return data

    def _change_member(self, method: str, member: str, what: str) -> None:
        key = check_member_key(member)
        with self._lock:
            status, _ = self._connection.request(method, f"/members/{key}/{what}", what=what)
        if status == 404:
            raise ChannelError(f"The host at {self._url} does not know packed members.")

    def request_member_kill(self, member: str) -> None:
        self._change_member("PUT", member, "kill")

    def member_running(self, member: str) -> bool:
        return bool(self._member(member).get("running"))

    def member_kill_requested(self, member: str) -> bool:
        return bool(self._member(member).get("kill"))

    def mark_member_running(self, member: str, running: bool) -> None:
        self._change_member("PUT" if running else "DELETE", member, "running")

    def open_writer(self, task_instance_id: int) -> EventWriter:
        tid = _check_id(task_instance_id, "task instance id")
        return HttpEventWriter(self._new_connection(), tid)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
