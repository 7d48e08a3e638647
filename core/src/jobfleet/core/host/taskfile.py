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

import contextlib
import dataclasses
import difflib
import functools
import math
import os
import re
import shlex
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeVar

from jobfleet.core.errors import JobfleetError, ResourceError
from jobfleet.core.host.located_tree import (
    Invalid,
    Node,
    child_path,
    describe,
    json_tree,
    kind_of,
    yaml_tree,
)
from jobfleet.core.naming import safe_name
from jobfleet.core.resources import CANONICAL_FIELDS, PACK, ResourceRequest, check_task_memory

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RESOURCE_SCALE",
    "FILE_FORMATS",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_COMMAND_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_RESOURCE_SCALE",
    "MAX_TASK_FILE_BYTES",
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
# The largest task file read: a million short tasks fit; a file beyond it (or /dev/zero) is
# refused after reading this much, not read until memory runs out.
MAX_TASK_FILE_BYTES: Final = 64 * 1024 * 1024
# The longest command, in UTF-8 bytes. The wrapper hands a command to `/bin/sh -c` as one
# argument, and Linux refuses any single argument of 128 KiB or more (MAX_ARG_STRLEN) with
# "Argument list too long" at launch: refused here instead, with room to spare.
MAX_COMMAND_BYTES: Final = 64 * 1024
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
_T = TypeVar("_T")


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
        with open(source, "rb") as handle:
            # One byte more than the limit tells a file at the limit from a larger one.
            data = handle.read(MAX_TASK_FILE_BYTES + 1)
    except OSError as error:
        problem = f"The file cannot be read: {error.strerror or error}."
        raise TaskFileError(source, None, None, problem) from error
    if len(data) > MAX_TASK_FILE_BYTES:
        problem = (
            f"The file is larger than {MAX_TASK_FILE_BYTES // 2**20} MiB, the most a task file "
            "may be; split the tasks into several runs."
        )
        raise TaskFileError(source, None, None, problem)
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
        root = yaml_tree(text) if chosen == "yaml" else json_tree(text)
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
            raise Invalid(None, "command", "No command was given.")
        command = _read_command(Node(shlex.join(argv), None, "command"))
        task_name = _command_name(argv[0]) if name is None else _read_name(Node(name, None, "name"))
        return _definition(task_name, command, Node(None, None, "command"), base)


def _command_name(program: str) -> str:
    base = os.path.basename(program.rstrip("/")) or "command"
    return safe_name(base, max_length=40)


# --- errors --------------------------------------------------------------------------------


@contextlib.contextmanager
def _reported_as(source: str) -> Iterator[None]:
    try:
        yield
    except Invalid as invalid:
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


# --- describing values in messages ---------------------------------------------------------


def _unknown_key(node: Node, key: str, allowed: Sequence[str]) -> Invalid:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if key in CANONICAL_FIELDS and "resources" in allowed:
        hint = f" ({key} is a resource: put it under `resources`)"
    problem = f"Unknown key {key!r}{hint}. The keys accepted here are: {', '.join(allowed)}."
    return Invalid(node.key_lines.get(key, node.line), child_path(node.path, key), problem)


def _entries(node: Node, allowed: Sequence[str], what: str) -> dict[str, Node]:
    """The entries of a mapping node that may only hold `allowed` keys."""
    if not isinstance(node.value, dict):
        raise Invalid(node.line, node.path, f"{what} must be a mapping, not {kind_of(node.value)}.")
    for key in node.value:
        if key not in allowed:
            raise _unknown_key(node, key, allowed)
    return dict(node.value)


# --- the fields ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """The settings one level gives (command line, file defaults, a task); None: not given."""

    resources: Mapping[str, Node] = dataclasses.field(default_factory=dict)
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


def _read_resources(node: Node | None) -> dict[str, Node]:
    """A level's resources, each value kept with its line; they are parsed once merged."""
    if node is None or node.value is None:
        # "resources:" with every entry commented out reads as null: nothing asked for.
        return {}
    if not isinstance(node.value, dict):
        problem = f"resources must be a mapping, not {describe(node)}."
        raise Invalid(node.line, node.path, problem)
    for value in node.value.values():
        _check_storable(value)
    return {key: Node(_plain(value), value.line, value.path) for key, value in node.value.items()}


def _plain(node: Node) -> Any:
    if isinstance(node.value, list):
        return [_plain(item) for item in node.value]
    if isinstance(node.value, dict):
        return {key: _plain(value) for key, value in node.value.items()}
    return node.value


def _check_storable(node: Node) -> None:
    """Refuse what JSON cannot hold (YAML dates, binary): extra resource keys are stored as is."""
    if isinstance(node.value, list | dict):
        items = node.value.values() if isinstance(node.value, dict) else node.value
        for item in items:
            _check_storable(item)
    elif node.value is not None and not isinstance(node.value, str | int | float):
        problem = f"The value is {kind_of(node.value)}, which cannot be stored"
        hint = f"; write it as a string: {node.as_string}." if node.as_string else "."
        raise Invalid(node.line, node.path, problem + hint)


def _check_resources(given: Mapping[str, Node], where: Node) -> dict[str, Any]:
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
        # "pack.max_runtime" is a part of `pack`: the line is that of `pack`.
        culprit = given.get(error.field.split(".", 1)[0], where)
        raise Invalid(culprit.line, culprit.path, str(error)) from error


def _canonical_resources(loose: Mapping[str, Any]) -> dict[str, Any]:
    request = ResourceRequest.parse(loose)
    if request.memory is not None:
        check_task_memory(request.memory, value=loose.get("memory"))
    canonical = request.to_dict()
    if PACK in canonical:
        # Checked here, once, and written in one form, so that equal requests group alike.
        pack = request.pack
        if pack is None:
            del canonical[PACK]
        else:
            canonical[PACK] = pack.to_dict()
    return canonical


@functools.lru_cache(maxsize=256)
def _cached_resources(loose: tuple[tuple[str, type, Any], ...]) -> dict[str, Any]:
    # Most tasks of a large file ask for the same few resources: parse each set once.
    return _canonical_resources({key: value for key, _, value in loose})


def _read_env(node: Node | None) -> dict[str, str]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        problem = f"env must map variable names to strings, not be {kind_of(node.value)}."
        raise Invalid(node.line, node.path, problem)
    env: dict[str, str] = {}
    for key, value in node.value.items():
        if not _ENV_NAME.fullmatch(key):
            problem = (
                f"{key!r} is not an environment variable name: use letters, digits and _, "
                "not starting with a digit."
            )
            raise Invalid(node.key_lines.get(key, node.line), value.path, problem)
        env[key] = _env_value(key, value)
    return env


def _env_value(key: str, node: Node) -> str:
    if isinstance(node.value, str):
        if "\0" in node.value:
            raise Invalid(node.line, node.path, f"The value of {key} holds a NUL character.")
        return node.value
    problem = f"The value of {key} is {describe(node)}, but environment values are strings"
    if node.as_string:
        raise Invalid(node.line, node.path, f"{problem}; write it as a string: {node.as_string}.")
    raise Invalid(node.line, node.path, f"{problem}.")


def _read_max_attempts(node: Node) -> int:
    value = node.value
    # bool is an int subclass, but `max_attempts: true` is a mistake, never a count of one.
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ATTEMPTS_LIMIT:
        return value
    problem = f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"
    raise Invalid(node.line, node.path, f"{problem}, not {describe(node)}.")


def _read_resource_scale(node: Node) -> float:
    value = node.value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 1 < value <= MAX_RESOURCE_SCALE and math.isfinite(value):
        return float(value)
    problem = (
        "resource_scale must be a number above 1 and at most "
        f"{MAX_RESOURCE_SCALE:g} (the factor memory and runtime grow by after a resource error)"
    )
    raise Invalid(node.line, node.path, f"{problem}, not {describe(node)}.")


def _read_fallback_queues(node: Node) -> tuple[str, ...]:
    if not isinstance(node.value, list):
        problem = f"fallback_queues must be a list of queue names, not {describe(node)}"
        hint = f"; write it as [{node.value}]" if isinstance(node.value, str) else ""
        raise Invalid(node.line, node.path, f"{problem}{hint}.")
    queues: list[str] = []
    for item in node.value:
        if not isinstance(item.value, str) or not item.value.strip():
            problem = f"A queue name must be a non-empty string, not {describe(item)}."
            raise Invalid(item.line, item.path, problem)
        if item.value in queues:
            raise Invalid(item.line, item.path, f"The queue {item.value!r} is listed twice.")
        queues.append(item.value)
    return tuple(queues)


def _read_name(node: Node) -> str:
    value = node.value
    if not isinstance(value, str):
        hint = f"; write it as a string: {node.as_string}" if node.as_string else ""
        problem = f"A name must be a string, not {describe(node)}{hint}."
        raise Invalid(node.line, node.path, problem)
    trouble = _name_trouble(value)
    if trouble is not None:
        raise Invalid(node.line, node.path, trouble)
    return value


def _name_trouble(name: str) -> str | None:
    if not name.strip():
        return "The name is empty."
    if len(name) > MAX_NAME_LENGTH:
        return f"The name is {len(name)} characters long; the most is {MAX_NAME_LENGTH}."
    if any(unicodedata.category(char) in _HIDDEN_CATEGORIES for char in name):
        return f"The name {name!r} holds a control character or line break."
    return None


def _read_command(node: Node) -> str:
    value = node.value
    if isinstance(value, list):
        problem = "The command must be one string, as you would type it in a shell, not a list."
        raise Invalid(node.line, node.path, problem)
    if not isinstance(value, str):
        problem = f"The command must be a string, not {describe(node)}"
        hint = f"; write it as a string: {node.as_string}" if node.as_string else ""
        raise Invalid(node.line, node.path, f"{problem}{hint}.")
    if not value.strip():
        raise Invalid(node.line, node.path, "The command is empty.")
    if "\0" in value:
        raise Invalid(node.line, node.path, "The command holds a NUL character.")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_COMMAND_BYTES:
        problem = (
            f"The command is {size:,} bytes long; the most is {MAX_COMMAND_BYTES:,} bytes "
            f"({MAX_COMMAND_BYTES // 1024} KiB), as the shell gets it as one argument, which "
            "Linux limits to 128 KiB. Put a long script in a file and run the file."
        )
        raise Invalid(node.line, node.path, problem)
    return value


def _read_layer(entries: Mapping[str, Node]) -> _Layer:
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
        key: Node(value, None, f"--{key.replace('_', '-')}")
        for key, value in defaults.resources.items()
        if value is not None
    }
    _check_resources(resources, Node(None, None, "resources"))
    env = {key: Node(value, None, f"env.{key}") for key, value in defaults.env.items()}
    attempts = None
    if defaults.max_attempts is not None:
        attempts = _read_max_attempts(Node(defaults.max_attempts, None, "--max-attempts"))
    return _Layer(resources, _read_env(Node(env, None, "env")), attempts)


def _definition(name: str, command: str, where: Node, layer: _Layer) -> TaskDefinition:
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


def _tree_tasks(root: Node | None, base: _Layer) -> list[TaskDefinition]:
    if root is None or root.value is None:
        raise Invalid(None, None, "The file holds no tasks.")
    if isinstance(root.value, list):
        return _task_list(root, base)
    if not isinstance(root.value, dict):
        problem = (
            "The file must hold a mapping with a `tasks` list, or a list of tasks; "
            f"it holds {describe(root)}."
        )
        raise Invalid(root.line, None, problem)
    entries = _entries(root, _TOP_KEYS, "The file")
    if "tasks" not in entries:
        raise Invalid(root.line, "tasks", "The file has no `tasks` list.")
    defaults = entries.get("defaults")
    if defaults is not None and defaults.value is not None:
        layer = _read_layer(_entries(defaults, _SHARED_KEYS, "defaults"))
        # Checked on their own too: a bad default is a mistake even where every task overrides it.
        _check_resources(layer.resources, defaults)
        base = base.under(layer)
    return _task_list(entries["tasks"], base)


def _task_list(node: Node, base: _Layer) -> list[TaskDefinition]:
    if node.value is None or node.value == []:
        raise Invalid(node.line, node.path or "tasks", "There are no tasks.")
    if not isinstance(node.value, list):
        problem = f"tasks must be a list of tasks, not {describe(node)}."
        raise Invalid(node.line, node.path, problem)
    tasks = [_read_task(item, position, base) for position, item in enumerate(node.value, 1)]
    _check_unique_names(tasks, node.value)
    return tasks


def _read_task(node: Node, position: int, base: _Layer) -> TaskDefinition:
    if not isinstance(node.value, dict):
        problem = f"A task must be a mapping with at least a command, not {describe(node)}"
        hint = f"; write it as `command: {node.value}`" if isinstance(node.value, str) else ""
        raise Invalid(node.line, node.path, f"{problem}{hint}.")
    entries = _entries(node, _TASK_KEYS, "A task")
    name = _read_name(entries["name"]) if "name" in entries else f"task-{position}"
    if "command" not in entries:
        problem = "The task has no command; every task needs one."
        raise Invalid(node.line, child_path(node.path, "command"), problem)
    command = _read_command(entries["command"])
    return _definition(name, command, node, base.under(_read_layer(entries)))


def _check_unique_names(tasks: Sequence[TaskDefinition], nodes: Sequence[Node]) -> None:
    first_line: dict[str, int | None] = {}
    for task, node in zip(tasks, nodes, strict=True):
        if task.name in first_line:
            where = node.value.get("name", node)
            problem = (
                f"The name {task.name!r} is used by two tasks, at lines "
                f"{first_line[task.name]} and {where.line}; task names must be unique."
            )
            raise Invalid(where.line, child_path(node.path, "name"), problem)
        first_line[task.name] = node.value.get("name", node).line


# --- plain text files ----------------------------------------------------------------------


def _text_tasks(text: str, base: _Layer) -> list[TaskDefinition]:
    tasks = []
    for line, command in _text_commands(text):
        where = Node(command, line, "")
        checked = _read_command(where)
        tasks.append(_definition(f"line-{line}", checked, where, base))
    if not tasks:
        raise Invalid(None, None, "The file holds no tasks: every line is blank or a comment.")
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
        raise Invalid(start, None, problem)
