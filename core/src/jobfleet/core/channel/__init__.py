"""The host channel: how worker-node wrappers get their task specs and report back.

A channel is named by a URL. `open_channel(url)` picks the transport from the URL's scheme
through a small registry; `file:///abs/dir` (or a plain absolute path) and `http(s)://…` (served
by the host, `jobfleet.core.channel.http`) are built in, and other transports add themselves
with `register_transport`. See docs/channel.md for the protocol.
"""

from __future__ import annotations

import os

from jobfleet.core.errors import ChannelError, ProtocolVersionError

from .base import Channel, EventCursor, EventWriter, member_key, new_writer_token
from .file import FileChannel
from .messages import (
    PROTOCOL_VERSION,
    Event,
    EventKind,
    FinalReport,
    HeartbeatReport,
    Report,
    RunningReport,
    TaskSpec,
    UsageReport,
    read_report,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .transport_factory import TransportFactory

__all__ = [
    "PROTOCOL_VERSION",
    "Channel",
    "ChannelError",
    "Event",
    "EventCursor",
    "EventKind",
    "EventWriter",
    "FileChannel",
    "FinalReport",
    "HeartbeatReport",
    "ProtocolVersionError",
    "Report",
    "RunningReport",
    "TaskSpec",
    "TransportFactory",
    "UsageReport",
    "member_key",
    "new_writer_token",
    "open_channel",
    "read_report",
    "register_transport",
    "transport_schemes",
]

# RFC 3986: a letter, then letters, digits, "+", "-" or ".". Checked without `re`, and URLs
# split without urllib.parse (which imports ipaddress): the wrapper opens one channel per task.
_SCHEME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz")
_SCHEME_REST = _SCHEME_FIRST | frozenset("0123456789+.-")


def _valid_scheme(key: str) -> bool:
    return bool(key) and key[0] in _SCHEME_FIRST and all(c in _SCHEME_REST for c in key[1:])


def _scheme(url: str) -> str:
    """`urlsplit(url).scheme.lower()`, without importing urllib.parse for a plain URL."""
    name, colon, _ = url.partition(":")
    if (
        colon
        and name.isascii()
        and _valid_scheme(name.lower())
        and url.isprintable()  # urlsplit drops tabs and newlines, and strips controls
        and not url.startswith(" ")
        and "[" not in url
        and "]" not in url  # an IPv6 host, which urlsplit checks
    ):
        return name.lower()
    from urllib.parse import urlsplit

    return urlsplit(url).scheme.lower()


def __getattr__(name: str) -> object:
    # `TransportFactory` is a typing.Protocol, imported when asked for: the wrapper never is.
    if name == "TransportFactory":
        from .transport_factory import TransportFactory

        return TransportFactory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_TRANSPORTS: dict[str, TransportFactory] = {}


def register_transport(scheme: str, factory: TransportFactory, *, replace: bool = False) -> None:
    """Make `open_channel` hand URLs of `scheme` to `factory`.

    Registering a scheme that is taken raises ChannelError unless `replace=True`, so that two
    packages cannot silently fight over one scheme.
    """
    key = scheme.lower()
    if not _valid_scheme(key):
        raise ChannelError(f"{scheme!r} is not a valid URL scheme.")
    if key in _TRANSPORTS and not replace and _TRANSPORTS[key] is not factory:
        raise ChannelError(
            f"A channel transport is already registered for {key!r}; pass replace=True "
            "to replace it."
        )
    _TRANSPORTS[key] = factory


def transport_schemes() -> list[str]:
    """The schemes `open_channel` accepts, sorted."""
    return sorted(_TRANSPORTS)


def open_channel(url: str, *, create: bool = False) -> Channel:
    """The channel `url` names: `file:///abs/dir`, a plain absolute path, or a registered scheme.

    `create=True` is for the host: it makes the channel if it does not exist yet. A worker
    opens without it, so that a wrong URL fails instead of making an empty channel.
    """
    if os.path.isabs(url):
        # A plain absolute path is the file transport's convenience form.
        return _TRANSPORTS["file"](url, create=create)
    scheme = _scheme(url)
    factory = _TRANSPORTS.get(scheme)
    if factory is None:
        accepted = ", ".join(f"{name}:" for name in transport_schemes())
        what = f"the scheme {scheme!r}" if scheme else "no scheme"
        raise ChannelError(
            f"The channel address {url!r} has {what}, which no channel transport serves. "
            f"Accepted: {accepted}, or an absolute path."
        )
    return factory(url, create=create)


register_transport("file", FileChannel.from_url)


def _open_http(url: str, *, create: bool = False) -> Channel:
    # Imported on use: http.client costs the wrapper a few milliseconds it pays only when its
    # channel is served over HTTP.
    from .http import HttpChannel

    return HttpChannel.from_url(url, create=create)


register_transport("http", _open_http)
register_transport("https", _open_http)
