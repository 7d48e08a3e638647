"""Node types, as the user names them: `c5.large:0.05,m5.xlarge`.

A spec is a comma-separated list of instance types, each optionally followed by `:BID`, the
highest price (per node-hour, in the provider's currency) to pay for preemptible (spot) capacity
of that type. A type with a bid is launched as preemptible capacity for tasks that allow it
(falling back to on-demand nodes of the same type when spot capacity cannot be had); a type
without a bid is launched on demand only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jobfleet.core.errors import JobfleetError

__all__ = ["NODE_TYPES_FORMS", "NodeType", "NodeTypeError", "format_node_types", "parse_node_types"]

NODE_TYPES_FORMS = (
    "a comma-separated list of node types, each optionally with a spot bid after a colon, "
    "such as 'c5.large:0.05,m5.xlarge' (names are letters, digits, '.', '_' and '-'; "
    "a bid is a positive number)"
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*", re.ASCII)
_BID_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


class NodeTypeError(JobfleetError, ValueError):
    """A node-type spec could not be read."""

    def __init__(self, spec: str, part: str, problem: str) -> None:
        super().__init__(f"Node types {spec!r}: {part!r} {problem}. Accepted: {NODE_TYPES_FORMS}.")
        self.spec = spec
        self.part = part


@dataclass(frozen=True)
class NodeType:
    """One instance type the scaler may launch, with its spot bid (None: on demand only)."""

    name: str
    spot_bid: float | None = None

    @property
    def preemptible(self) -> bool:
        """Whether nodes of this type are launched as preemptible (spot) capacity."""
        return self.spot_bid is not None

    def __str__(self) -> str:
        return self.name if self.spot_bid is None else f"{self.name}:{self.spot_bid:g}"


def parse_node_types(spec: str) -> list[NodeType]:
    """Read a spec such as `c5.large:0.05,m5.xlarge`; raise `NodeTypeError` naming the bad part."""
    if not isinstance(spec, str):
        raise NodeTypeError(str(spec), str(spec), f"is a {type(spec).__name__}, not a string")
    if not spec.strip():
        raise NodeTypeError(spec, spec, "is empty")
    found: list[NodeType] = []
    seen: set[str] = set()
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            raise NodeTypeError(spec, raw, "is an empty entry (two commas, or a trailing one)")
        name, colon, bid_text = part.partition(":")
        name = name.strip()
        if not _NAME_RE.fullmatch(name):
            problem = "has no node type name" if not name else "is not a valid node type name"
            if "/" in name:
                problem = "lists alternatives with '/', which jobfleet does not support"
            raise NodeTypeError(spec, part, problem)
        bid: float | None = None
        if colon:
            bid_text = bid_text.strip()
            if not _BID_RE.fullmatch(bid_text):
                raise NodeTypeError(spec, part, "has a spot bid that is not a positive number")
            bid = float(bid_text)
            if bid <= 0 or not math.isfinite(bid):
                raise NodeTypeError(spec, part, "has a spot bid that is not a positive number")
        if name in seen:
            raise NodeTypeError(spec, part, "names a node type already listed")
        seen.add(name)
        found.append(NodeType(name, bid))
    return found


def format_node_types(node_types: list[NodeType]) -> str:
    """The spec that `parse_node_types` reads back to the same list."""
    return ",".join(str(node_type) for node_type in node_types)
