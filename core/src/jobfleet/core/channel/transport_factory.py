"""The type of a channel transport's factory, apart: `typing.Protocol` costs the worker-node
wrapper `typing`, and only type checkers and transport authors need it."""

from __future__ import annotations

from typing import Protocol

from .base import Channel


class TransportFactory(Protocol):
    """Opens (or, with `create=True`, creates on the host side) the channel a URL names."""

    def __call__(self, url: str, *, create: bool = False) -> Channel: ...
