"""Reading the task files that `jobfleet run FILE` takes into a list of task definitions.

Three formats: YAML and JSON (a `tasks` list with optional `defaults`, or just a list of tasks)
and plain text (one shell command per line). Everything is checked before anything is written
anywhere, and every problem becomes a `TaskFileError` naming the file, the line and the field,
such as "tasks.yaml:12: tasks[3].resources.memory: …".

A value is taken, key by key, from the task itself, else from the file's `defaults`, else from
the command line (`TaskDefaults`), else from the built-in default; `resources` and `env` merge
key by key in the same order.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import shlex
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import yaml

from jobfleet.core.errors import JobfleetError, ResourceError
from jobfleet.core.naming import safe_name
from jobfleet.core.resources import CANONICAL_FIELDS, ResourceRequest

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RESOURCE_SCALE",
    "FILE_FORMATS",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_NAME_LENGTH",
    "MAX_RESOURCE_SCALE",
    "TaskDefaults",
    "TaskDefinition",
    "TaskFileError",
    "load_task_file",
    "parse_task_text",
    "task_from_command",
]

DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_RESOURCE_SCALE: Final = 1.5
MAX_ATTEMPTS_LIMIT: Final = 100
# Beyond ten times per retry, a resource error would jump straight past any queue's limits.
MAX_RESOURCE_SCALE: Final = 10.0
MAX_NAME_LENGTH: Final = 200
FILE_FORMATS: Final = ("yaml", "json", "text")

# Where errors in `TaskDefaults` are reported: they come from flags, not from the file.
_COMMAND_LINE: Final = "command line"
_TOP_KEYS: Final = ("defaults", "tasks")
_SHARED_KEYS: Final = ("resources", "env", "max_attempts", "resource_scale", "fallback_queues")
_TASK_KEYS: Final = ("name", "command", *_SHARED_KEYS)
_EXTENSIONS: Final[Mapping[str, str]] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Control, format (bidi overrides, zero-width) and line/paragraph separators: a name holding
# them prints as something other than what it is, or breaks a line of output.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_JSON_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_T = TypeVar("_T")
# Deeper than any task file needs (tasks, a task, its resources, a value there), and far
# shallower than the stack: a deeper file is garbage or an attack.
_MAX_DEPTH: Final = 100
# libyaml's parser when PyYAML was built with it: several times faster on large files. It gives
# the same events as PyYAML's own; only the wording of syntax errors differs.
_YAML_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


# --- the public types ----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDefaults:
    """What the command-line flags give (--cores, --memory, --runtime, --gpus, --queue, …).

    The lowest layer below a file's `defaults` and each task's own values. Resource values are
    loose (`{"memory": "2G", "cores": 2}`); a None value or max_attempts counts as not given.
    """

    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    max_attempts: int | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Frozen: copies are written once, here, so a caller's later changes do not leak in.
        object.__setattr__(self, "resources", MappingProxyType(dict(self.resources)))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


@dataclass(frozen=True)
class TaskDefinition:
    """One checked task, ready for the ledger; `resources` is the canonical dict."""

    name: str
    command: str
    resources: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    env: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    resource_scale: float = DEFAULT_RESOURCE_SCALE
    fallback_queues: tuple[str, ...] = ()
    line: int | None = None


class TaskFileError(JobfleetError, ValueError):
    """A task file (or the flags that go with it) has a problem: "tasks.yaml:12: field: …"."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str) -> None:
        location = source if line is None else f"{source}:{line}"
        super().__init__(": ".join(part for part in (location, field, problem) if part))
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem


_NO_DEFAULTS: Final = TaskDefaults()


# --- the entry points ----------------------------------------------------------------------


def load_task_file(
    path: str | os.PathLike[str],
    defaults: TaskDefaults = _NO_DEFAULTS,
    *,
    file_format: str | None = None,
) -> list[TaskDefinition]:
    """Read and check a task file; the format comes from the extension unless given."""
    source = os.fspath(path)
    chosen = _checked_format(source, file_format or _format_of(source))
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        problem = f"The file cannot be read: {error.strerror or error}."
        raise TaskFileError(source, None, None, problem) from error
    return parse_task_text(_decoded(data, source), source, chosen, defaults)


def parse_task_text(
    text: str, source: str, file_format: str, defaults: TaskDefaults = _NO_DEFAULTS
) -> list[TaskDefinition]:
    """Check the text of a task file; `source` names it in errors."""
    with _reported_as(_COMMAND_LINE):
        base = _cli_layer(defaults)
    chosen = _checked_format(source, file_format)
    with _reported_as(source):
        # A byte-order mark is how some editors start UTF-8 files; json.loads refuses it.
        text = text.removeprefix("\ufeff")
        if chosen == "text":
            return _text_tasks(text, base)
        root = _yaml_root(text) if chosen == "yaml" else _json_root(text)
        return _tree_tasks(root, base)


def task_from_command(
    argv: Sequence[str], defaults: TaskDefaults = _NO_DEFAULTS, *, name: str | None = None
) -> TaskDefinition:
    """The one task of `jobfleet run -- COMMAND ARGS…`, quoted so a shell reads back `argv`."""
    if isinstance(argv, str):
        # A string is a Sequence[str] too, and would become one word per character.
        raise TypeError("task_from_command takes the argv list, not a command string")
    with _reported_as(_COMMAND_LINE):
        base = _cli_layer(defaults)
        if not argv or not argv[0].strip():
            raise _Invalid(None, "command", "No command was given.")
        command = _read_command(_Node(shlex.join(argv), None, "command"))
        task_name = (
            _command_name(argv[0]) if name is None else _read_name(_Node(name, None, "name"))
        )
        return _definition(task_name, command, _Node(None, None, "command"), base)


def _command_name(program: str) -> str:
    base = os.path.basename(program.rstrip("/")) or "command"
    return safe_name(base, max_length=40)


# --- errors --------------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem found while checking; `_reported_as` turns it into a `TaskFileError`."""

    def __init__(self, line: int | None, field: str | None, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.field = field or None
        self.problem = problem


@contextlib.contextmanager
def _reported_as(source: str) -> Iterator[None]:
    try:
        yield
    except _Invalid as invalid:
        error = TaskFileError(source, invalid.line, invalid.field, invalid.problem)
        raise error from invalid.__cause__
    except RecursionError:
        # json.loads recurses once per nesting level, and gives up after about a thousand.
        raise TaskFileError(source, None, None, "The file is nested too deeply.") from None


def _format_of(source: str) -> str:
    return _EXTENSIONS.get(os.path.splitext(source)[1].lower(), "text")


def _checked_format(source: str, file_format: str) -> str:
    chosen = file_format.strip().lower()
    if chosen not in FILE_FORMATS:
        problem = f"Unknown task file format {file_format!r}; use one of {', '.join(FILE_FORMATS)}."
        raise TaskFileError(source, None, None, problem)
    return chosen


def _decoded(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        problem = f"Byte 0x{data[error.start]:02x} is not UTF-8 text; save the file as UTF-8."
        raise TaskFileError(source, line, None, problem) from error


# --- the located tree both structured formats are read into --------------------------------


@dataclass(frozen=True)
class _Node:
    """A value with its line and field path; mappings hold `_Node`s, as do lists."""

    value: Any
    line: int | None
    path: str
    # A scalar as the file wrote it ("80", "yes"), and written as a string in the file's own
    # syntax ("'80'" in YAML, '"80"' in JSON), for messages and hints.
    text: str = ""
    as_string: str = ""
    key_lines: dict[str, int | None] = dataclasses.field(default_factory=dict)
    # How many values this one stands for, counting what YAML aliases repeat (YAML only).
    size: int = 1


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, position: int) -> str:
    # Only a list of tasks can stand at the top, so its items are tasks[i] in either layout.
    return f"{path or 'tasks'}[{position}]"


def _add_entry(node: _Node, key: str, key_line: int | None, value: _Node) -> None:
    """Add one key to a mapping node being built, refusing a key given twice."""
    if key in node.value:
        first = node.key_lines[key]
        problem = f"The key {key!r} is given twice, at lines {first} and {key_line}; keep one."
        raise _Invalid(key_line, _child(node.path, key), problem)
    node.value[key] = value
    node.key_lines[key] = key_line


def _new_mapping(line: int | None, path: str) -> _Node:
    return _Node({}, line, path, key_lines={})


class _YamlBuilder:
    """Builds `_Node`s from PyYAML's parse events, which carry the line of every value.

    Not from yaml.compose: libyaml's composer recurses in C and kills the process on a file
    nested tens of thousands of levels deep, while its parser beneath does not recurse and
    this builder stops at `_MAX_DEPTH`. Tags are resolved as yaml.compose resolves them (with
    SafeLoader's resolver) and scalars are built by SafeConstructor, so no tag can run code.
    """

    def __init__(self, text: str) -> None:
        self._events = yaml.parse(text, Loader=_YAML_LOADER)
        # Typed Any: the stubs leave Resolver.resolve untyped.
        self._resolver: Any = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self._anchors: dict[str, _Node] = {}
        # An alias repeats its anchor's values; a "billion laughs" file nests aliases until
        # that is more values than memory holds. A real file stays near its length in values.
        self._most_values = 20 * len(text) + 10_000

    def root(self) -> _Node | None:
        next(self._events)  # the stream start
        if isinstance(next(self._events), yaml.StreamEndEvent):
            return None
        root = self._node(next(self._events), "", 0)
        next(self._events)  # the document end
        extra = next(self._events)
        if not isinstance(extra, yaml.StreamEndEvent):
            raise _Invalid(_line(extra), None, "The file holds more than one YAML document.")
        return root

    def _node(self, event: yaml.Event, path: str, depth: int) -> _Node:
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, path)
        if depth > _MAX_DEPTH:
            # No field: its path would be a hundred levels long.
            raise _Invalid(_line(event), None, f"Values nest more than {_MAX_DEPTH} levels deep.")
        if isinstance(event, yaml.ScalarEvent):
            node = self._scalar(event, path)
        elif isinstance(event, yaml.SequenceStartEvent):
            node = self._sequence(event, path, depth)
        elif isinstance(event, yaml.MappingStartEvent):
            node = self._mapping(event, path, depth)
        else:  # pragma: no cover - the parser gives nothing else where a value goes
            raise _Invalid(_line(event), path, f"Unexpected YAML {type(event).__name__}.")
        if node.size > self._most_values:
            raise _Invalid(node.line, path, "The aliases expand to too many values.")
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            self._anchors[event.anchor] = node
        return node

    def _alias(self, event: yaml.AliasEvent, path: str) -> _Node:
        # An anchor is registered once its value is complete, so an alias inside the value
        # it names (a cycle) finds nothing.
        node = self._anchors.get(str(event.anchor))
        if node is None:
            problem = f"The alias *{event.anchor} has no complete anchor &{event.anchor} before it."
            raise _Invalid(_line(event), path, problem)
        return node

    def _scalar_tag(self, event: yaml.ScalarEvent) -> str:
        if event.tag is None or event.tag == "!":
            return str(self._resolver.resolve(yaml.ScalarNode, event.value, event.implicit))
        return str(event.tag)

    def _scalar(self, event: yaml.ScalarEvent, path: str) -> _Node:
        tag, text, line = self._scalar_tag(event), str(event.value), _line(event)
        try:
            # Most scalars are plain strings, which need no constructor (large files go faster).
            node = yaml.ScalarNode(tag, text)
            value = text if tag == _STR_TAG else self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as error:
            # ValueError: an integer of more digits than Python converts.
            reason = getattr(error, "problem", None) or str(error)
            problem = f"The value {text!r} cannot be read: {reason}."
            raise _Invalid(line, path, problem) from error
        return _Node(value, line, path, text=text, as_string=_yaml_quoted(text))

    def _check_tag(self, event: yaml.CollectionStartEvent, path: str, default: str) -> None:
        if event.tag not in (None, "!", default):
            raise _Invalid(_line(event), path, f"The YAML tag {event.tag!r} is not supported.")

    def _sequence(self, event: yaml.SequenceStartEvent, path: str, depth: int) -> _Node:
        self._check_tag(event, path, _SEQ_TAG)
        items: list[_Node] = []
        while not isinstance(item := next(self._events), yaml.SequenceEndEvent):
            items.append(self._node(item, _index(path, len(items)), depth + 1))
        return _Node(items, _line(event), path, size=1 + sum(item.size for item in items))

    def _mapping(self, event: yaml.MappingStartEvent, path: str, depth: int) -> _Node:
        self._check_tag(event, path, _MAP_TAG)
        built, inherited = _new_mapping(_line(event), path), []
        while not isinstance(key_event := next(self._events), yaml.MappingEndEvent):
            if (
                isinstance(key_event, yaml.ScalarEvent)
                and self._scalar_tag(key_event) == _MERGE_TAG
            ):
                inherited += self._merged(next(self._events), path, depth)
                continue
            key = self._key(self._node(key_event, path, depth + 1), path)
            value = self._node(next(self._events), _child(path, key), depth + 1)
            _add_entry(built, key, _line(key_event), value)
        # "<<: *base" fills in what the mapping does not set itself; the first source wins.
        for source in inherited:
            for key, value in source.value.items():
                if key not in built.value:
                    _add_entry(built, key, source.key_lines[key], value)
        size = 1 + sum(1 + value.size for value in built.value.values())
        return dataclasses.replace(built, size=size)

    def _merged(self, event: yaml.Event, path: str, depth: int) -> list[_Node]:
        merged = self._node(event, path, depth + 1)
        sources = merged.value if isinstance(merged.value, list) else [merged]
        for source in sources:
            if not isinstance(source.value, dict):
                problem = "A merge key (<<) takes a mapping or a list of mappings."
                raise _Invalid(source.line, path, problem)
        return list(sources)

    def _key(self, key: _Node, path: str) -> str:
        if isinstance(key.value, str):
            return key.value
        problem = f"A key must be a name, not {_kind(key.value)}."
        if key.as_string:
            problem = f"A key must be a name, not {_describe(key)}; write it as {key.as_string}."
        raise _Invalid(key.line, path, problem)


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


def _yaml_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _yaml_root(text: str) -> _Node | None:
    try:
        return _YamlBuilder(text).root()
    except yaml.MarkedYAMLError as error:
        raise _yaml_syntax_error(error) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise _Invalid(line, None, f"The character U+{code:04X} is not allowed in YAML.") from None
    except yaml.YAMLError as error:
        raise _Invalid(None, None, f"The YAML is not valid: {error}") from None


def _yaml_syntax_error(error: yaml.MarkedYAMLError) -> _Invalid:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "unreadable"
    if error.context and error.problem:
        problem = f"{problem} ({error.context})"
    where = f" at column {mark.column + 1}" if mark is not None else ""
    line = mark.line + 1 if mark is not None else None
    return _Invalid(line, None, f"The YAML is not valid{where}: {problem}.")


class _JsonTree:
    """Reads JSON that `json.loads` has accepted once more, noting the line of every value.

    PyYAML cannot stand in for this: it refuses tabs between JSON tokens, and reads 1e5 as a
    string. Values are read by the json module itself, so they are exactly what json.loads
    gives; only the walk over objects and arrays is ours.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._newlines = [match.start() for match in re.finditer("\n", text)]
        self._decoder = json.JSONDecoder()

    def _line(self, position: int) -> int:
        return bisect.bisect_left(self._newlines, position) + 1

    def _skip(self, position: int) -> int:
        match = _JSON_WHITESPACE.match(self._text, position)
        return position if match is None else match.end()

    def _past_comma(self, position: int) -> int:
        # json.loads has checked the syntax: after a value comes either a comma or the close.
        position = self._skip(position)
        if self._text[position] == ",":
            position = self._skip(position + 1)
        return position

    def build(self, position: int, path: str, depth: int = 0) -> tuple[_Node, int]:
        position = self._skip(position)
        line = self._line(position)
        opener = self._text[position]
        if opener in "{[" and depth > _MAX_DEPTH:
            # No field: its path would be a hundred levels long.
            raise _Invalid(line, None, f"Values nest more than {_MAX_DEPTH} levels deep.")
        if opener == "{":
            return self._object(position + 1, line, path, depth)
        if opener == "[":
            return self._array(position + 1, line, path, depth)
        value, end = self._decoder.raw_decode(self._text, position)
        text = self._text[position:end]
        return _Node(value, line, path, text=text, as_string=json.dumps(text)), end

    def _object(self, position: int, line: int, path: str, depth: int) -> tuple[_Node, int]:
        built = _new_mapping(line, path)
        position = self._skip(position)
        while self._text[position] != "}":
            key_line = self._line(position)
            # Keys are strings, which the json module reads like any other.
            key, position = self._decoder.raw_decode(self._text, position)
            position = self._skip(position) + 1  # past the ':'
            value, position = self.build(position, _child(path, key), depth + 1)
            _add_entry(built, str(key), key_line, value)
            position = self._past_comma(position)
        return built, position + 1

    def _array(self, position: int, line: int, path: str, depth: int) -> tuple[_Node, int]:
        items: list[_Node] = []
        position = self._skip(position)
        while self._text[position] != "]":
            item, position = self.build(position, _index(path, len(items)), depth + 1)
            items.append(item)
            position = self._past_comma(position)
        return _Node(items, line, path), position + 1


def _json_root(text: str) -> _Node | None:
    if not text.strip():
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"The JSON is not valid at column {error.colno}: {error.msg}."
        raise _Invalid(error.lineno, None, problem) from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise _Invalid(None, None, f"The JSON cannot be read: {error}.") from None
    return _JsonTree(text).build(0, "")[0]


# --- describing values in messages ---------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "a mapping", bytes: "bytes"}
    return names.get(type(value), f"a {type(value).__name__}")


def _describe(node: _Node) -> str:
    """A value as a message shows it: "80 (a number)", "a list", "nothing (null)"."""
    if node.value is None or isinstance(node.value, list | dict):
        return _kind(node.value)
    shown = node.text if node.text and not isinstance(node.value, str) else repr(node.value)
    return f"{shown} ({_kind(node.value)})"


def _unknown_key(node: _Node, key: str, allowed: Sequence[str]) -> _Invalid:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if key in CANONICAL_FIELDS and "resources" in allowed:
        hint = f" ({key} is a resource: put it under `resources`)"
    problem = f"Unknown key {key!r}{hint}. The keys accepted here are: {', '.join(allowed)}."
    return _Invalid(node.key_lines.get(key, node.line), _child(node.path, key), problem)


def _entries(node: _Node, allowed: Sequence[str], what: str) -> dict[str, _Node]:
    """The entries of a mapping node that may only hold `allowed` keys."""
    if not isinstance(node.value, dict):
        raise _Invalid(node.line, node.path, f"{what} must be a mapping, not {_kind(node.value)}.")
    for key in node.value:
        if key not in allowed:
            raise _unknown_key(node, key, allowed)
    return dict(node.value)


# --- the fields ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """The settings one level gives (command line, file defaults, a task); None: not given."""

    resources: Mapping[str, _Node] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_attempts: int | None = None
    resource_scale: float | None = None
    fallback_queues: tuple[str, ...] | None = None

    def under(self, upper: _Layer) -> _Layer:
        """This layer with `upper`'s values on top, key by key for resources and env."""
        return _Layer(
            resources={**self.resources, **upper.resources},
            env={**self.env, **upper.env},
            max_attempts=_first(upper.max_attempts, self.max_attempts),
            resource_scale=_first(upper.resource_scale, self.resource_scale),
            fallback_queues=_first(upper.fallback_queues, self.fallback_queues),
        )


def _first(upper: _T | None, lower: _T | None) -> _T | None:
    return lower if upper is None else upper


def _given_or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _read_resources(node: _Node | None) -> dict[str, _Node]:
    """A level's resources, each value kept with its line; they are parsed once merged."""
    if node is None or node.value is None:
        # "resources:" with every entry commented out reads as null: nothing asked for.
        return {}
    if not isinstance(node.value, dict):
        problem = f"resources must be a mapping, not {_describe(node)}."
        raise _Invalid(node.line, node.path, problem)
    for value in node.value.values():
        _check_storable(value)
    return {key: _Node(_plain(value), value.line, value.path) for key, value in node.value.items()}


def _plain(node: _Node) -> Any:
    if isinstance(node.value, list):
        return [_plain(item) for item in node.value]
    if isinstance(node.value, dict):
        return {key: _plain(value) for key, value in node.value.items()}
    return node.value


def _check_storable(node: _Node) -> None:
    """Refuse what JSON cannot hold (YAML dates, binary): extra resource keys are stored as is."""
    if isinstance(node.value, list | dict):
        items = node.value.values() if isinstance(node.value, dict) else node.value
        for item in items:
            _check_storable(item)
    elif node.value is not None and not isinstance(node.value, str | int | float):
        problem = f"The value is {_kind(node.value)}, which cannot be stored"
        hint = f"; write it as a string: {node.as_string}." if node.as_string else "."
        raise _Invalid(node.line, node.path, problem + hint)


def _check_resources(given: Mapping[str, _Node], where: _Node) -> dict[str, Any]:
    """The canonical dict of merged resources; an error names the level the value came from."""
    # The type is part of the key: True == 1, but `cores: true` must not pass as `cores: 1`.
    loose = tuple((key, type(node.value), node.value) for key, node in given.items())
    try:
        hash(loose)
        hashable = True
    except TypeError:  # a list or a mapping under an extra key
        hashable = False
    try:
        if hashable:
            return dict(_cached_resources(loose))  # a copy: the cached dict is shared
        return _canonical_resources({key: node.value for key, node in given.items()})
    except ResourceError as error:
        culprit = given.get(error.field, where)
        raise _Invalid(culprit.line, culprit.path, str(error)) from error


def _canonical_resources(loose: Mapping[str, Any]) -> dict[str, Any]:
    return ResourceRequest.parse(loose).to_dict()


@functools.lru_cache(maxsize=256)
def _cached_resources(loose: tuple[tuple[str, type, Any], ...]) -> dict[str, Any]:
    # Most tasks of a large file ask for the same few resources: parse each set once.
    return _canonical_resources({key: value for key, _, value in loose})


def _read_env(node: _Node | None) -> dict[str, str]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        problem = f"env must map variable names to strings, not be {_kind(node.value)}."
        raise _Invalid(node.line, node.path, problem)
    env: dict[str, str] = {}
    for key, value in node.value.items():
        if not _ENV_NAME.fullmatch(key):
            problem = (
                f"{key!r} is not an environment variable name: use letters, digits and _, "
                "not starting with a digit."
            )
            raise _Invalid(node.key_lines.get(key, node.line), value.path, problem)
        env[key] = _env_value(key, value)
    return env


def _env_value(key: str, node: _Node) -> str:
    if isinstance(node.value, str):
        if "\0" in node.value:
            raise _Invalid(node.line, node.path, f"The value of {key} holds a NUL character.")
        return node.value
    problem = f"The value of {key} is {_describe(node)}, but environment values are strings"
    if node.as_string:
        raise _Invalid(node.line, node.path, f"{problem}; write it as a string: {node.as_string}.")
    raise _Invalid(node.line, node.path, f"{problem}.")


def _read_max_attempts(node: _Node) -> int:
    value = node.value
    # bool is an int subclass, but `max_attempts: true` is a mistake, never a count of one.
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ATTEMPTS_LIMIT:
        return value
    problem = f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"
    raise _Invalid(node.line, node.path, f"{problem}, not {_describe(node)}.")


def _read_resource_scale(node: _Node) -> float:
    value = node.value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 1 < value <= MAX_RESOURCE_SCALE and math.isfinite(value):
        return float(value)
    problem = (
        "resource_scale must be a number above 1 and at most "
        f"{MAX_RESOURCE_SCALE:g} (the factor memory and runtime grow by after a resource error)"
    )
    raise _Invalid(node.line, node.path, f"{problem}, not {_describe(node)}.")


def _read_fallback_queues(node: _Node) -> tuple[str, ...]:
    if not isinstance(node.value, list):
        problem = f"fallback_queues must be a list of queue names, not {_describe(node)}"
        hint = f"; write it as [{node.value}]" if isinstance(node.value, str) else ""
        raise _Invalid(node.line, node.path, f"{problem}{hint}.")
    queues: list[str] = []
    for item in node.value:
        if not isinstance(item.value, str) or not item.value.strip():
            problem = f"A queue name must be a non-empty string, not {_describe(item)}."
            raise _Invalid(item.line, item.path, problem)
        if item.value in queues:
            raise _Invalid(item.line, item.path, f"The queue {item.value!r} is listed twice.")
        queues.append(item.value)
    return tuple(queues)


def _read_name(node: _Node) -> str:
    value = node.value
    if not isinstance(value, str):
        hint = f"; write it as a string: {node.as_string}" if node.as_string else ""
        problem = f"A name must be a string, not {_describe(node)}{hint}."
        raise _Invalid(node.line, node.path, problem)
    trouble = _name_trouble(value)
    if trouble is not None:
        raise _Invalid(node.line, node.path, trouble)
    return value


def _name_trouble(name: str) -> str | None:
    if not name.strip():
        return "The name is empty."
    if len(name) > MAX_NAME_LENGTH:
        return f"The name is {len(name)} characters long; the most is {MAX_NAME_LENGTH}."
    if any(unicodedata.category(char) in _HIDDEN_CATEGORIES for char in name):
        return f"The name {name!r} holds a control character or line break."
    return None


def _read_command(node: _Node) -> str:
    value = node.value
    if isinstance(value, list):
        problem = "The command must be one string, as you would type it in a shell, not a list."
        raise _Invalid(node.line, node.path, problem)
    if not isinstance(value, str):
        problem = f"The command must be a string, not {_describe(node)}"
        hint = f"; write it as a string: {node.as_string}" if node.as_string else ""
        raise _Invalid(node.line, node.path, f"{problem}{hint}.")
    if not value.strip():
        raise _Invalid(node.line, node.path, "The command is empty.")
    if "\0" in value:
        raise _Invalid(node.line, node.path, "The command holds a NUL character.")
    return value


def _read_layer(entries: Mapping[str, _Node]) -> _Layer:
    """The settings a file's `defaults` or a task gives (keys already checked)."""

    def read(key: str, reader: Any) -> Any:
        node = entries.get(key)
        return None if node is None else reader(node)

    return _Layer(
        resources=_read_resources(entries.get("resources")),
        env=_read_env(entries.get("env")),
        max_attempts=read("max_attempts", _read_max_attempts),
        resource_scale=read("resource_scale", _read_resource_scale),
        fallback_queues=read("fallback_queues", _read_fallback_queues),
    )


def _cli_layer(defaults: TaskDefaults) -> _Layer:
    """The command-line layer, checked on its own so a bad flag fails whatever the file says."""
    resources = {
        key: _Node(value, None, f"--{key.replace('_', '-')}")
        for key, value in defaults.resources.items()
        if value is not None
    }
    _check_resources(resources, _Node(None, None, "resources"))
    env = {key: _Node(value, None, f"env.{key}") for key, value in defaults.env.items()}
    attempts = None
    if defaults.max_attempts is not None:
        attempts = _read_max_attempts(_Node(defaults.max_attempts, None, "--max-attempts"))
    return _Layer(resources, _read_env(_Node(env, None, "env")), attempts)


def _definition(name: str, command: str, where: _Node, layer: _Layer) -> TaskDefinition:
    """A task from its own fields and its merged layers, filling in the built-in defaults."""
    return TaskDefinition(
        name=name,
        command=command,
        resources=_check_resources(layer.resources, where),
        env=dict(layer.env),
        max_attempts=_given_or(layer.max_attempts, DEFAULT_MAX_ATTEMPTS),
        resource_scale=_given_or(layer.resource_scale, DEFAULT_RESOURCE_SCALE),
        fallback_queues=_given_or(layer.fallback_queues, ()),
        line=where.line,
    )


# --- YAML and JSON files -------------------------------------------------------------------


def _tree_tasks(root: _Node | None, base: _Layer) -> list[TaskDefinition]:
    if root is None or root.value is None:
        raise _Invalid(None, None, "The file holds no tasks.")
    if isinstance(root.value, list):
        return _task_list(root, base)
    if not isinstance(root.value, dict):
        problem = (
            "The file must hold a mapping with a `tasks` list, or a list of tasks; "
            f"it holds {_describe(root)}."
        )
        raise _Invalid(root.line, None, problem)
    entries = _entries(root, _TOP_KEYS, "The file")
    if "tasks" not in entries:
        raise _Invalid(root.line, "tasks", "The file has no `tasks` list.")
    defaults = entries.get("defaults")
    if defaults is not None and defaults.value is not None:
        layer = _read_layer(_entries(defaults, _SHARED_KEYS, "defaults"))
        # Checked on their own too: a bad default is a mistake even where every task overrides it.
        _check_resources(layer.resources, defaults)
        base = base.under(layer)
    return _task_list(entries["tasks"], base)


def _task_list(node: _Node, base: _Layer) -> list[TaskDefinition]:
    if node.value is None or node.value == []:
        raise _Invalid(node.line, node.path or "tasks", "There are no tasks.")
    if not isinstance(node.value, list):
        problem = f"tasks must be a list of tasks, not {_describe(node)}."
        raise _Invalid(node.line, node.path, problem)
    tasks = [_read_task(item, position, base) for position, item in enumerate(node.value, 1)]
    _check_unique_names(tasks, node.value)
    return tasks


def _read_task(node: _Node, position: int, base: _Layer) -> TaskDefinition:
    if not isinstance(node.value, dict):
        problem = f"A task must be a mapping with at least a command, not {_describe(node)}"
        hint = f"; write it as `command: {node.value}`" if isinstance(node.value, str) else ""
        raise _Invalid(node.line, node.path, f"{problem}{hint}.")
    entries = _entries(node, _TASK_KEYS, "A task")
    name = _read_name(entries["name"]) if "name" in entries else f"task-{position}"
    if "command" not in entries:
        problem = "The task has no command; every task needs one."
        raise _Invalid(node.line, _child(node.path, "command"), problem)
    command = _read_command(entries["command"])
    return _definition(name, command, node, base.under(_read_layer(entries)))


def _check_unique_names(tasks: Sequence[TaskDefinition], nodes: Sequence[_Node]) -> None:
    first_line: dict[str, int | None] = {}
    for task, node in zip(tasks, nodes, strict=True):
        if task.name in first_line:
            where = node.value.get("name", node)
            problem = (
                f"The name {task.name!r} is used by two tasks, at lines "
                f"{first_line[task.name]} and {where.line}; task names must be unique."
            )
            raise _Invalid(where.line, _child(node.path, "name"), problem)
        first_line[task.name] = node.value.get("name", node).line


# --- plain text files ----------------------------------------------------------------------


def _text_tasks(text: str, base: _Layer) -> list[TaskDefinition]:
    tasks = []
    for line, command in _text_commands(text):
        where = _Node(command, line, "")
        checked = _read_command(where)
        tasks.append(_definition(f"line-{line}", checked, where, base))
    if not tasks:
        raise _Invalid(None, None, "The file holds no tasks: every line is blank or a comment.")
    return tasks


def _text_commands(text: str) -> Iterator[tuple[int, str]]:
    """(first line, command) for each command; a trailing backslash joins lines, as in sh."""
    # Only "\n" ends a line (with "\r\n" tolerated): str.splitlines would also split at
    # form feeds and Unicode separators, and the line numbers would no longer match an editor.
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        # An even run of backslashes is escaped backslashes, not a continuation.
        if (len(line) - len(line.rstrip("\\"))) % 2:
            pending.append(line[:-1])
            continue
        pending.append(line)
        command = "".join(pending).strip()
        pending = []
        if command:
            yield start, command
    if pending:
        problem = "The last command ends with a backslash, but no line follows it."
        raise _Invalid(start, None, problem)
