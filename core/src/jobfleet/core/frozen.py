"""A small base for immutable value classes, without `dataclasses`.

The worker-node wrapper imports the channel's message classes before every task; built with
`dataclasses` they cost it `dataclasses` and `inspect` and the decorator's code generation
(≈ 15 ms together). These classes write their `__init__` by hand and list their fields in
`_fields`; the base gives them what a frozen dataclass has: equality and a hash over the
fields, a repr, `replace`, and attributes that cannot be assigned after construction.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self

__all__ = ["Frozen", "FrozenInstanceError"]


class FrozenInstanceError(AttributeError):
    """Raised on assigning to (or deleting) a field of a frozen instance."""


class Frozen:
    """Immutable value: subclasses declare `__slots__`, `_fields` and an `__init__` that sets
    each field with `object.__setattr__`.

    `_fields` are the constructor's keywords, in order: compared by `==` and shown by `repr`.
    `_unhashed` names fields left out of the hash (mappings, which cannot be hashed).
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _unhashed: ClassVar[frozenset[str]] = frozenset()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        skip = self._unhashed
        return hash(tuple(getattr(self, name) for name in self._fields if name not in skip))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen instance")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen instance")

    # copy, deepcopy and pickle restore the fields through these (not through __setattr__).
    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (shallow, like `dataclasses.asdict` for flat values)."""
        return {name: getattr(self, name) for name in self._fields}

    def replace(self, **changes: Any) -> Self:
        """A copy with the fields named in `changes` replaced (checked like a new instance)."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise TypeError(f"{type(self).__qualname__} has no field {unknown[0]!r}")
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return type(self)(**values)

    __replace__ = replace  # copy.replace (Python 3.13) calls it
