"""YAML and JSON read into trees of values that know their line and field path.

The task-file reader checks these trees, so that every problem names the file's line and the
field ("tasks[3].resources.memory"). Both readers refuse what a task file never needs and an
attacker might send: nesting deeper than `MAX_DEPTH`, YAML aliases that expand to far more
values than the text is long, and YAML tags that would build anything but plain data.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import yaml

__all__ = [
    "MAX_DEPTH",
    "Invalid",
    "Node",
    "child_path",
    "describe",
    "json_tree",
    "kind_of",
    "yaml_tree",
]

_MAP_TAG: Final = "tag:yaml.org,2002:map"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_JSON_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
# Deeper than any task file needs (tasks, a task, its resources, a value there), and far
# shallower than the stack: a deeper file is garbage or an attack.
MAX_DEPTH: Final = 100
# libyaml's parser when PyYAML was built with it: several times faster on large files. It gives
# the same events as PyYAML's own; only the wording of syntax errors differs.
_YAML_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


class Invalid(Exception):
    """A problem found while reading or checking a tree, at a line and field.

    The task-file reader turns it into a `TaskFileError`, naming the file.
    """

    def __init__(self, line: int | None, field: str | None, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.field = field or None
        self.problem = problem


@dataclass(frozen=True)
class Node:
    """A value with its line and field path; mappings hold `Node`s, as do lists."""

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


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, position: int) -> str:
    # Only a list of tasks can stand at the top, so its items are tasks[i] in either layout.
    return f"{path or 'tasks'}[{position}]"


def _add_entry(node: Node, key: str, key_line: int | None, value: Node) -> None:
    """Add one key to a mapping node being built, refusing a key given twice."""
    if key in node.value:
        first = node.key_lines[key]
        problem = f"The key {key!r} is given twice, at lines {first} and {key_line}; keep one."
        raise Invalid(key_line, child_path(node.path, key), problem)
    node.value[key] = value
    node.key_lines[key] = key_line


def _new_mapping(line: int | None, path: str) -> Node:
    return Node({}, line, path, key_lines={})


class _YamlBuilder:
    """Builds `Node`s from PyYAML's parse events, which carry the line of every value.

    Not from yaml.compose: libyaml's composer recurses in C and kills the process on a file
    nested tens of thousands of levels deep, while its parser beneath does not recurse and
    this builder stops at `MAX_DEPTH`. Tags are resolved as yaml.compose resolves them (with
    SafeLoader's resolver) and scalars are built by SafeConstructor, so no tag can run code.
    """

    def __init__(self, text: str) -> None:
        self._events = yaml.parse(text, Loader=_YAML_LOADER)
        # Typed Any: the stubs leave Resolver.resolve untyped.
        self._resolver: Any = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self._anchors: dict[str, Node] = {}
        # An alias repeats its anchor's values; a "billion laughs" file nests aliases until
        # that is more values than memory holds. A real file stays near its length in values.
        self._most_values = 20 * len(text) + 10_000

    def root(self) -> Node | None:
        next(self._events)  # the stream start
        if isinstance(next(self._events), yaml.StreamEndEvent):
            return None
        root = self._node(next(self._events), "", 0)
        next(self._events)  # the document end
        extra = next(self._events)
        if not isinstance(extra, yaml.StreamEndEvent):
            raise Invalid(_line(extra), None, "The file holds more than one YAML document.")
        return root

    def _node(self, event: yaml.Event, path: str, depth: int) -> Node:
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, path)
        if depth > MAX_DEPTH:
            # No field: its path would be a hundred levels long.
            raise Invalid(_line(event), None, f"Values nest more than {MAX_DEPTH} levels deep.")
        if isinstance(event, yaml.ScalarEvent):
            node = self._scalar(event, path)
        elif isinstance(event, yaml.SequenceStartEvent):
            node = self._sequence(event, path, depth)
        elif isinstance(event, yaml.MappingStartEvent):
            node = self._mapping(event, path, depth)
        else:  # pragma: no cover - the parser gives nothing else where a value goes
            raise Invalid(_line(event), path, f"Unexpected YAML {type(event).__name__}.")
        if node.size > self._most_values:
            raise Invalid(node.line, path, "The aliases expand to too many values.")
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            self._anchors[event.anchor] = node
        return node

    def _alias(self, event: yaml.AliasEvent, path: str) -> Node:
        # An anchor is registered once its value is complete, so an alias inside the value
        # it names (a cycle) finds nothing.
        node = self._anchors.get(str(event.anchor))
        if node is None:
            problem = f"The alias *{event.anchor} has no complete anchor &{event.anchor} before it."
            raise Invalid(_line(event), path, problem)
        return node

    def _scalar_tag(self, event: yaml.ScalarEvent) -> str:
        if event.tag is None or event.tag == "!":
            return str(self._resolver.resolve(yaml.ScalarNode, event.value, event.implicit))
        return str(event.tag)

    def _scalar(self, event: yaml.ScalarEvent, path: str) -> Node:
        tag, text, line = self._scalar_tag(event), str(event.value), _line(event)
        try:
            # Most scalars are plain strings, which need no constructor (large files go faster).
            node = yaml.ScalarNode(tag, text)
            value = text if tag == _STR_TAG else self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as error:
            # ValueError: an integer of more digits than Python converts.
            reason = getattr(error, "problem", None) or str(error)
            problem = f"The value {text!r} cannot be read: {reason}."
            raise Invalid(line, path, problem) from error
        return Node(value, line, path, text=text, as_string=_yaml_quoted(text))

    def _check_tag(self, event: yaml.CollectionStartEvent, path: str, default: str) -> None:
        if event.tag not in (None, "!", default):
            raise Invalid(_line(event), path, f"The YAML tag {event.tag!r} is not supported.")

    def _sequence(self, event: yaml.SequenceStartEvent, path: str, depth: int) -> Node:
        self._check_tag(event, path, _SEQ_TAG)
        items: list[Node] = []
        while not isinstance(item := next(self._events), yaml.SequenceEndEvent):
            items.append(self._node(item, _index(path, len(items)), depth + 1))
        return Node(items, _line(event), path, size=1 + sum(item.size for item in items))

    def _mapping(self, event: yaml.MappingStartEvent, path: str, depth: int) -> Node:
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
            value = self._node(next(self._events), child_path(path, key), depth + 1)
            _add_entry(built, key, _line(key_event), value)
        # "<<: *base" fills in what the mapping does not set itself; the first source wins.
        for source in inherited:
            for key, value in source.value.items():
                if key not in built.value:
                    _add_entry(built, key, source.key_lines[key], value)
        size = 1 + sum(1 + value.size for value in built.value.values())
        return dataclasses.replace(built, size=size)

    def _merged(self, event: yaml.Event, path: str, depth: int) -> list[Node]:
        merged = self._node(event, path, depth + 1)
        sources = merged.value if isinstance(merged.value, list) else [merged]
        for source in sources:
            if not isinstance(source.value, dict):
                problem = "A merge key (<<) takes a mapping or a list of mappings."
                raise Invalid(source.line, path, problem)
        return list(sources)

    def _key(self, key: Node, path: str) -> str:
        if isinstance(key.value, str):
            return key.value
        problem = f"A key must be a name, not {kind_of(key.value)}."
        if key.as_string:
            problem = f"A key must be a name, not {describe(key)}; write it as {key.as_string}."
        raise Invalid(key.line, path, problem)


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


def _yaml_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def yaml_tree(text: str) -> Node | None:
    """The tree of one YAML document (None for an empty text); `Invalid` if unreadable."""
    try:
        return _YamlBuilder(text).root()
    except yaml.MarkedYAMLError as error:
        raise _yaml_syntax_error(error) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise Invalid(line, None, f"The character U+{code:04X} is not allowed in YAML.") from None
    except yaml.YAMLError as error:
        raise Invalid(None, None, f"The YAML is not valid: {error}") from None


def _yaml_syntax_error(error: yaml.MarkedYAMLError) -> Invalid:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "unreadable"
    if error.context and error.problem:
        problem = f"{problem} ({error.context})"
    where = f" at column {mark.column + 1}" if mark is not None else ""
    line = mark.line + 1 if mark is not None else None
    return Invalid(line, None, f"The YAML is not valid{where}: {problem}.")


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

    def build(self, position: int, path: str, depth: int = 0) -> tuple[Node, int]:
        position = self._skip(position)
        line = self._line(position)
        opener = self._text[position]
        if opener in "{[" and depth > MAX_DEPTH:
            # No field: its path would be a hundred levels long.
            raise Invalid(line, None, f"Values nest more than {MAX_DEPTH} levels deep.")
        if opener == "{":
            return self._object(position + 1, line, path, depth)
        if opener == "[":
            return self._array(position + 1, line, path, depth)
        value, end = self._decoder.raw_decode(self._text, position)
        text = self._text[position:end]
        return Node(value, line, path, text=text, as_string=json.dumps(text)), end

    def _object(self, position: int, line: int, path: str, depth: int) -> tuple[Node, int]:
        built = _new_mapping(line, path)
        position = self._skip(position)
        while self._text[position] != "}":
            key_line = self._line(position)
            # Keys are strings, which the json module reads like any other.
            key, position = self._decoder.raw_decode(self._text, position)
            position = self._skip(position) + 1  # past the ':'
            value, position = self.build(position, child_path(path, key), depth + 1)
            _add_entry(built, str(key), key_line, value)
            position = self._past_comma(position)
        return built, position + 1

    def _array(self, position: int, line: int, path: str, depth: int) -> tuple[Node, int]:
        items: list[Node] = []
        position = self._skip(position)
        while self._text[position] != "]":
            item, position = self.build(position, _index(path, len(items)), depth + 1)
            items.append(item)
            position = self._past_comma(position)
        return Node(items, line, path), position + 1


def json_tree(text: str) -> Node | None:
    """The tree of a JSON text (None for a blank one); `Invalid` if unreadable."""
    if not text.strip():
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"The JSON is not valid at column {error.colno}: {error.msg}."
        raise Invalid(error.lineno, None, problem) from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise Invalid(None, None, f"The JSON cannot be read: {error}.") from None
    return _JsonTree(text).build(0, "")[0]


# --- describing values in messages ---------------------------------------------------------


def kind_of(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "a mapping", bytes: "bytes"}
    return names.get(type(value), f"a {type(value).__name__}")


def describe(node: Node) -> str:
    """A value as a message shows it: "80 (a number)", "a list", "nothing (null)"."""
    if node.value is None or isinstance(node.value, list | dict):
        return kind_of(node.value)
    shown = node.text if node.text and not isinstance(node.value, str) else repr(node.value)
    return f"{shown} ({kind_of(node.value)})"
