"""Task files: the three formats, merge precedence, and errors that name file, line and field."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobfleet.core.errors import JobfleetError, ResourceError
from jobfleet.core.host import located_tree
from jobfleet.core.host.taskfile import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RESOURCE_SCALE,
    MAX_COMMAND_BYTES,
    MAX_TASK_FILE_BYTES,
    TaskDefaults,
    TaskDefinition,
    TaskFileError,
    load_task_file,
    parse_task_text,
    task_from_command,
)

SOURCES = {"yaml": "tasks.yaml", "json": "tasks.json", "text": "tasks.txt"}
CLI = TaskDefaults(
    resources={"memory": "2G", "cores": 4, "queue": "cli-queue", "account": "cli-acct"},
    max_attempts=5,
    env={"FROM_CLI": "cli", "SHARED": "cli"},
)
# What CLI's resources become on their own: canonical, canonical fields first.
CLI_RESOURCES = {"cores": 4, "memory": "2G", "queue": "cli-queue", "account": "cli-acct"}
# Loaders the YAML line numbers are checked with: PyYAML's own, and libyaml's when built in.
LOADERS = [
    pytest.param(yaml.SafeLoader, id="SafeLoader"),
    pytest.param(
        getattr(yaml, "CSafeLoader", None),
        id="CSafeLoader",
        marks=pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml"),
    ),
]


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def parse(
    text: str, file_format: str = "yaml", defaults: TaskDefaults = CLI
) -> list[TaskDefinition]:
    return parse_task_text(text, SOURCES[file_format], file_format, defaults)


def error_of(text: str, file_format: str = "yaml", defaults: TaskDefaults = CLI) -> TaskFileError:
    with pytest.raises(TaskFileError) as caught:
        parse(text, file_format, defaults)
    return caught.value


def assert_error(error: TaskFileError, line: int | None, field: str | None, fragment: str) -> None:
    """The error names its source, line and field, both as attributes and in its message."""
    assert (error.line, error.field) == (line, field), str(error)
    assert fragment in error.problem, error.problem
    location = error.source if line is None else f"{error.source}:{line}"
    expected = ": ".join(part for part in (location, field, error.problem) if part)
    assert str(error) == expected


FULL_YAML = yaml_text(
    """
    defaults:
      resources: {cores: 1, runtime: 10m, queue: file-queue}
      max_attempts: 4
      env: {GREETING: hello, SHARED: file}
      resource_scale: 2
      fallback_queues: [big]
    tasks:
      - name: hello
        command: echo hello
        resources: {memory: 1024M, queue: task-queue}
        env: {NAME: world, SHARED: task}
        max_attempts: 2
        resource_scale: 3
        fallback_queues: [bigger, biggest]
      - command: echo second
    """
)

FULL_JSON = """\
{
  "defaults": {
    "resources": {"cores": 1, "runtime": "10m", "queue": "file-queue"},
    "max_attempts": 4,
    "env": {"GREETING": "hello", "SHARED": "file"},
    "resource_scale": 2,
    "fallback_queues": ["big"]
  },
  "tasks": [
    {
      "name": "hello",
      "command": "echo hello",
      "resources": {"memory": "1024M", "queue": "task-queue"},
      "env": {"NAME": "world", "SHARED": "task"},
      "max_attempts": 2,
      "resource_scale": 3,
      "fallback_queues": ["bigger", "biggest"]
    },
    {"command": "echo second"}
  ]
}
"""


@pytest.mark.parametrize(
    ("file_format", "text", "lines"), [("yaml", FULL_YAML, (8, 15)), ("json", FULL_JSON, (10, 19))]
)
def test_structured_files_merge_task_over_file_defaults_over_command_line(
    file_format: str, text: str, lines: tuple[int, int]
) -> None:
    first, second = parse(text, file_format)
    assert first == TaskDefinition(
        name="hello",
        command="echo hello",
        # memory: task; cores, runtime: file; queue: task over file over CLI; account: CLI.
        resources={
            "cores": 1,
            "memory": "1G",
            "runtime": 600,
            "queue": "task-queue",
            "account": "cli-acct",
        },
        env={"FROM_CLI": "cli", "SHARED": "task", "GREETING": "hello", "NAME": "world"},
        max_attempts=2,
        resource_scale=3.0,
        fallback_queues=("bigger", "biggest"),
        line=lines[0],
    )
    assert second == TaskDefinition(
        name="task-2",
        command="echo second",
        resources={
            "cores": 1,
            "memory": "2G",
            "runtime": 600,
            "queue": "file-queue",
            "account": "cli-acct",
        },
        env={"FROM_CLI": "cli", "SHARED": "file", "GREETING": "hello"},
        max_attempts=4,
        resource_scale=2.0,
        fallback_queues=("big",),
        line=lines[1],
    )


def test_a_top_level_list_takes_command_line_defaults_then_built_in_ones() -> None:
    text = "- command: echo one\n- {command: echo two, name: two, max_attempts: 1}\n"
    first, second = parse(text)
    assert (first.name, first.line, second.name, second.line) == ("task-1", 1, "two", 2)
    assert first.resources == CLI_RESOURCES
    assert first.env == {"FROM_CLI": "cli", "SHARED": "cli"}
    assert (first.max_attempts, second.max_attempts) == (5, 1)
    bare = parse(text, defaults=TaskDefaults())[0]
    assert (bare.resources, bare.env, bare.fallback_queues) == ({}, {}, ())
    assert (bare.max_attempts, bare.resource_scale) == (
        DEFAULT_MAX_ATTEMPTS,
        DEFAULT_RESOURCE_SCALE,
    )
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_RESOURCE_SCALE) == (3, 1.5)


def test_resources_come_back_canonical_with_extra_keys_untouched() -> None:
    text = yaml_text(
        """
        - command: x
          resources:
            memory: 1024M
            runtime: "1:30:00"
            cores: "2"
            gpus: a100:2
            constraint: [skylake, "ib"]
            account: proj
        """
    )
    (task,) = parse(text, defaults=TaskDefaults())
    assert task.resources == {
        "cores": 2,
        "memory": "1G",
        "runtime": 5400,
        "gpus": 2,
        "gpu_type": "a100",
        "constraint": ["skylake", "ib"],
        "account": "proj",
    }


def test_each_task_gets_its_own_resources_dict() -> None:
    first, second = parse("- command: a\n- command: b\n")
    first.resources["memory"] = "9G"
    first.env["X"] = "y"
    assert second.resources["memory"] == "2G"
    assert "X" not in second.env
    assert parse("- command: c\n")[0].resources["memory"] == "2G"


def test_a_boolean_resource_is_refused_even_after_the_same_number() -> None:
    # Resources are parsed once per distinct set, and True == 1: the set must tell them apart.
    first = parse("- {command: x, resources: {cores: 1}}\n", defaults=TaskDefaults())
    assert first[0].resources == {"cores": 1}
    error = error_of("- {command: x, resources: {cores: true}}\n", defaults=TaskDefaults())
    assert_error(error, 1, "tasks[0].resources.cores", "is a bool, not a number")


def test_null_resource_value_clears_a_lower_default_and_null_sections_are_empty() -> None:
    text = yaml_text(
        """
        defaults:
          resources:
          env:
        tasks:
          - command: x
            resources: {queue: null, account: ~}
        """
    )
    (task,) = parse(text)
    # A null canonical value means "not asked for"; extra keys keep None as given.
    assert task.resources == {"cores": 4, "memory": "2G", "account": None}
    assert task.env == {"FROM_CLI": "cli", "SHARED": "cli"}


def test_yaml_anchors_and_merge_keys_work_and_own_keys_win() -> None:
    text = yaml_text(
        """
        tasks:
          - command: x
            resources: &big {cores: 8, memory: 16G}
          - command: y
            resources:
              <<: *big
              memory: 32G
          - command: z
            resources: *big
        """
    )
    assert [task.resources for task in parse(text, defaults=TaskDefaults())] == [
        {"cores": 8, "memory": "16G"},
        {"cores": 8, "memory": "32G"},
        {"cores": 8, "memory": "16G"},
    ]


def test_byte_order_mark_and_crlf_line_ends_are_read() -> None:
    assert parse("\ufeff- command: x\r\n- command: y\r\n")[1].line == 2
    assert parse('\ufeff[{"command": "x"}]', "json")[0].command == "x"
    assert parse("\ufeffecho hi\r\n", "text")[0].command == "echo hi"


# --- plain text --------------------------------------------------------------------------


def test_plain_text_skips_comments_and_blanks_and_joins_continued_lines() -> None:
    text = (
        "# a comment\n"  # 1
        "\n"  # 2
        "echo one\n"  # 3
        "   # an indented comment\n"  # 4
        "  \t\n"  # 5
        "python run.py \\\n"  # 6
        "  --flag \\\n"  # 7
        "  value\n"  # 8
        "echo 'a\\\\'\\\\\n"  # 9: even backslashes at the end: escaped, no continuation
        "echo crlf\r\n"  # 10
        "echo last"  # 11
    )
    tasks = parse(text, "text")
    assert [(task.name, task.line, task.command) for task in tasks] == [
        ("line-3", 3, "echo one"),
        ("line-6", 6, "python run.py   --flag   value"),
        ("line-9", 9, "echo 'a\\\\'\\\\"),
        ("line-10", 10, "echo crlf"),
        ("line-11", 11, "echo last"),
    ]
    assert shlex.split(tasks[1].command) == ["python", "run.py", "--flag", "value"]
    assert all(task.resources == CLI_RESOURCES for task in tasks)
    assert {task.max_attempts for task in tasks} == {5}
    assert tasks[0].env == {"FROM_CLI": "cli", "SHARED": "cli"}


def test_plain_text_keeps_a_hash_inside_a_continued_command() -> None:
    # As in sh, a continued line is part of the command even if it starts with '#'.
    (task,) = parse("echo a \\\n# not a comment\n", "text")
    assert (task.command, task.line) == ("echo a # not a comment", 1)


def test_plain_text_errors_name_the_line() -> None:
    assert_error(error_of("echo a\n\necho b \\", "text"), 3, None, "ends with a backslash")
    assert_error(error_of("echo a\necho \0b\n", "text"), 2, None, "NUL")


@pytest.mark.parametrize("memory", ["1B", "1023K", "0.5M"])
def test_memory_below_the_floor_is_refused_where_it_is_written(memory: str) -> None:
    # Any size parses, but a task given less than a mebibyte would be killed at once.
    text = f"tasks:\n  - command: x\n    resources: {{memory: {memory}}}\n"
    error = error_of(text, defaults=TaskDefaults())
    assert_error(error, 3, "tasks[0].resources.memory", "is below 1M, the least memory a task")
    flag = TaskDefaults(resources={"memory": memory})
    with pytest.raises(TaskFileError, match="MIN_TASK_MEMORY"):
        task_from_command(["true"], flag)
    assert parse("- {command: x, resources: {memory: 1M}}\n", defaults=TaskDefaults())


# --- task_from_command -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "hello world", ";", "rm -rf /"],
        ["/usr/local/bin/my tool", "it's", '"quoted"', "$(whoami)", "a\nb", "", "*"],
        ["python3"],
    ],
)
def test_task_from_command_quotes_so_a_shell_reads_back_the_argv(argv: list[str]) -> None:
    task = task_from_command(argv, CLI)
    assert shlex.split(task.command) == argv
    assert task.line is None
    assert task.resources == CLI_RESOURCES
    assert (task.max_attempts, task.resource_scale, task.fallback_queues) == (5, 1.5, ())


def test_task_from_command_names() -> None:
    assert task_from_command(["/usr/bin/python3", "x.py"]).name == "python3"
    spaced = task_from_command(["/opt/my tool/run me"]).name
    assert spaced.startswith("run_me-")
    assert all(char.isalnum() or char in "._-" for char in spaced)
    assert task_from_command(["echo"], name="greeting").name == "greeting"
    with pytest.raises(TaskFileError) as caught:
        task_from_command(["echo"], name="two\nlines")
    assert_error(caught.value, None, "name", "control character")


def test_task_from_command_refuses_no_command_and_a_string() -> None:
    for argv in ([], ["  "]):
        with pytest.raises(TaskFileError) as caught:
            task_from_command(argv)
        assert_error(caught.value, None, "command", "No command")
        assert caught.value.source == "command line"
    with pytest.raises(TypeError):
        task_from_command("echo hello")


# --- errors: line and field --------------------------------------------------------------

ACCEPTED_TASK_KEYS = "name, command, resources, env, max_attempts, resource_scale, fallback_queues"

# (id, text, line, field, a fragment of the problem)
# fmt: off
YAML_ERRORS: list[tuple[str, str, int | None, str | None, str]] = [
    ("bad-memory", "tasks:\n  - command: x\n    resources:\n      memory: lots\n",
     4, "tasks[0].resources.memory", "'lots' is not a memory size"),
    ("bare-memory", "tasks:\n  - command: x\n  - command: y\n    resources: {cores: 1,\n"
     "      memory: 4}\n", 5, "tasks[1].resources.memory", "4 has no unit"),
    ("bad-default-unused", "defaults:\n  resources:\n    runtime: soon\ntasks:\n"
     "  - {command: x, resources: {runtime: 1}}\n",
     3, "defaults.resources.runtime", "'soon' is not a duration"),
    ("unknown-top-key", "defaults: {}\ntask:\n  - command: x\n", 2, "task",
     "Unknown key 'task' (did you mean 'tasks'?). The keys accepted here are: defaults, tasks."),
    ("unknown-defaults-key", "defaults:\n  max_attempts: 2\n  name: all\ntasks: [{command: x}]\n",
     3, "defaults.name", "The keys accepted here are: resources, env, max_attempts, "
     "resource_scale, fallback_queues."),
    ("unknown-task-key", "tasks:\n  - command: x\n    memroy: 2G\n", 3, "tasks[0].memroy",
     f"Unknown key 'memroy'. The keys accepted here are: {ACCEPTED_TASK_KEYS}."),
    ("resource-outside-resources", "- command: x\n  memory: 2G\n", 2, "tasks[0].memory",
     "Unknown key 'memory' (memory is a resource: put it under `resources`)."),
    ("duplicate-yaml-key", "tasks:\n  - command: x\n    env: {A: b}\n    command: y\n",
     4, "tasks[0].command", "The key 'command' is given twice, at lines 2 and 4"),
    ("duplicate-env-key", "- command: x\n  env:\n    A: b\n    A: c\n",
     4, "tasks[0].env.A", "given twice, at lines 3 and 4"),
    ("env-number", "tasks:\n  - command: x\n    env:\n      PORT: 80\n", 4, "tasks[0].env.PORT",
     "80 (a number), but environment values are strings; write it as a string: '80'."),
    ("env-yaml-boolean", "tasks:\n  - command: x\n    env:\n      DEBUG: yes\n",
     4, "tasks[0].env.DEBUG", "write it as a string: 'yes'"),
    ("env-list", "- command: x\n  env: {PATHS: [a, b]}\n", 2, "tasks[0].env.PATHS",
     "is a list, but environment values are strings."),
    ("env-bad-name", "tasks:\n  - command: x\n    env:\n      OK: fine\n      2FAST: 'y'\n",
     5, "tasks[0].env.2FAST", "not an environment variable name"),
    ("env-dash-name", "- command: x\n  env:\n    MY-VAR: 'y'\n", 3, "tasks[0].env.MY-VAR",
     "not an environment variable name"),
    ("missing-command", "tasks:\n  - command: x\n  - name: two\n    env: {}\n",
     3, "tasks[1].command", "no command"),
    ("command-list", "tasks:\n  - command:\n      - echo\n      - hi\n", 3, "tasks[0].command",
     "one string, as you would type it in a shell, not a list"),
    ("command-number", "- command: 42\n", 1, "tasks[0].command",
     "not 42 (a number); write it as a string: '42'"),
    ("command-empty", "- command: ''\n", 1, "tasks[0].command", "empty"),
    ("command-null", "- command:\n", 1, "tasks[0].command", "nothing (null)"),
    ("command-nul", '- command: "a\\0b"\n', 1, "tasks[0].command", "NUL"),
    ("max-attempts-0", "- command: x\n  max_attempts: 0\n", 2, "tasks[0].max_attempts",
     "from 1 to 100, not 0 (a number)"),
    ("max-attempts-true", "- command: x\n  max_attempts: true\n", 2, "tasks[0].max_attempts",
     "not true (a boolean)"),
    ("max-attempts-101", "- command: x\n  max_attempts: 101\n", 2, "tasks[0].max_attempts",
     "not 101"),
    ("max-attempts-float", "- command: x\n  max_attempts: 2.0\n", 2, "tasks[0].max_attempts",
     "not 2.0"),
    ("max-attempts-string", "- command: x\n  max_attempts: '3'\n", 2, "tasks[0].max_attempts",
     "not '3' (a string)"),
    ("max-attempts-in-defaults", "defaults: {max_attempts: -1}\ntasks: [{command: x}]\n",
     1, "defaults.max_attempts", "not -1"),
    ("scale-1", "- command: x\n  resource_scale: 1\n", 2, "tasks[0].resource_scale",
     "above 1 and at most 10"),
    ("scale-11", "- command: x\n  resource_scale: 11\n", 2, "tasks[0].resource_scale", "not 11"),
    ("scale-nan", "- command: x\n  resource_scale: .nan\n", 2, "tasks[0].resource_scale",
     "not .nan"),
    ("scale-bool", "- command: x\n  resource_scale: yes\n", 2, "tasks[0].resource_scale",
     "(a boolean)"),
    ("queues-string", "- command: x\n  fallback_queues: big\n", 2, "tasks[0].fallback_queues",
     "write it as [big]"),
    ("queues-duplicate", "- command: x\n  fallback_queues:\n    - a\n    - a\n",
     4, "tasks[0].fallback_queues[1]", "listed twice"),
    ("queues-blank", "- command: x\n  fallback_queues: [a, '']\n",
     2, "tasks[0].fallback_queues[1]", "non-empty string"),
    ("name-number", "- command: x\n  name: 12\n", 2, "tasks[0].name",
     "write it as a string: '12'"),
    ("name-blank", "- command: x\n  name: ' '\n", 2, "tasks[0].name", "empty"),
    ("name-tab", '- command: x\n  name: "a\\tb"\n', 2, "tasks[0].name", "control character"),
    ("name-bidi-override", '- command: x\n  name: "a\\u202eb"\n', 2, "tasks[0].name",
     "control character"),
    ("name-too-long", f"- command: x\n  name: {'n' * 201}\n", 2, "tasks[0].name",
     "201 characters"),
    ("resource-date", "- command: x\n  resources: {when: 2024-01-01}\n", 2,
     "tasks[0].resources.when",
     "a date, which cannot be stored; write it as a string: '2024-01-01'"),
    ("resources-list", "- command: x\n  resources: [memory]\n", 2, "tasks[0].resources",
     "must be a mapping"),
    ("number-key", "- command: x\n  env:\n    80: x\n", 3, "tasks[0].env",
     "A key must be a name, not 80 (a number); write it as '80'"),
    ("task-string", "tasks:\n  - command: x\n  - echo y\n", 3, "tasks[1]",
     "write it as `command: echo y`"),
    ("not-yaml-tasks", "echo hello\n", 1, None, "it holds 'echo hello' (a string)"),
    ("no-tasks-key", "defaults: {}\n", 1, "tasks", "no `tasks` list"),
    ("tasks-number", "tasks: 3\n", 1, "tasks", "must be a list of tasks"),
    ("two-documents", "- command: x\n---\n- command: y\n", 2, None, "more than one YAML document"),
    ("yaml-syntax", "tasks:\n  - command: x\n  key: [unclosed\n", 3, None,
     "The YAML is not valid"),
    ("yaml-indent", "tasks:\n  - command: x\n    env: {A: b}\n   bad: indent\n", 4, None,
     "The YAML is not valid"),
    ("yaml-control-char", "tasks:\n  - command: \x07\n", 2, None, "U+0007"),
    ("python-tag-refused", "- !!python/object/apply:os.system [echo pwned]\n", 1, "tasks[0]",
     "tag"),
    ("python-name-refused", "- command: !!python/name:os.system x\n", 1, "tasks[0].command",
     "cannot be read"),
    ("undefined-alias", "- command: *nothing\n", 1, "tasks[0].command",
     "no complete anchor &nothing"),
]
# fmt: on


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [pytest.param(*row, id=name) for name, *row in YAML_ERRORS],
)
def test_yaml_errors_name_line_and_field(
    monkeypatch: pytest.MonkeyPatch,
    loader: Any,
    text: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    monkeypatch.setattr(located_tree, "_YAML_LOADER", loader)
    error = error_of(text)
    assert error.source == "tasks.yaml"
    assert_error(error, line, field, fragment)


def test_a_bad_value_keeps_the_resource_error_message() -> None:
    error = error_of("- command: x\n  resources: {memory: 4}\n")
    assert isinstance(error.__cause__, ResourceError)
    assert error.problem == str(error.__cause__)
    assert "Accepted: a size with a unit" in error.problem
    assert isinstance(error, JobfleetError)


def test_a_clash_across_levels_names_where_the_value_came_from() -> None:
    text = "defaults:\n  resources:\n    gpus: a100:1\ntasks:\n  - command: x\n" + (
        "    resources: {gpu_type: v100}\n"
    )
    assert_error(error_of(text), 3, "defaults.resources.gpus", "but gpu_type says 'v100'")


def test_duplicate_names_name_both_lines() -> None:
    text = "tasks:\n  - name: a\n    command: x\n  - command: y\n  - name: a\n    command: z\n"
    assert_error(error_of(text), 5, "tasks[2].name", "'a' is used by two tasks, at lines 2 and 5")
    # A default name counts too: the second task is task-2 already.
    clash = "- command: x\n- command: y\n- {command: z, name: task-2}\n"
    assert_error(error_of(clash), 3, "tasks[2].name", "at lines 2 and 3")


# fmt: off
JSON_ERRORS: list[tuple[str, str, int | None, str | None, str]] = [
    ("tab-indented-field", '{\n\t"tasks": [\n\t\t{"command": "x",\n\t\t "max_attempts": 0}\n\t]\n}',
     4, "tasks[0].max_attempts", "not 0 (a number)"),
    ("env-number",
     '{"tasks": [\n  {"command": "x"},\n  {"command": "y",\n   "env": {"PORT": 8080}}]}',
     4, "tasks[1].env.PORT", 'write it as a string: "8080"'),
    ("env-exponent", '[{"command": "x",\n  "env": {"N": 1e3}}]', 2, "tasks[0].env.N",
     'write it as a string: "1e3"'),
    ("bare-memory", '[\n {"command": "x",\n  "resources": {"memory": 512}}\n]', 3,
     "tasks[0].resources.memory", "has no unit"),
    ("duplicate-key", '[{"command": "x",\n  "command": "y"}]', 2, "tasks[0].command",
     "at lines 1 and 2"),
    ("unknown-key", '{"tasks": [{"command": "x"}],\n "defualts": {}}', 2, "defualts",
     "did you mean 'defaults'"),
    ("missing-command", '[{"command": "x"},\n\n  {"name": "y"}]', 3, "tasks[1].command",
     "no command"),
    ("command-list", '[{"command": ["echo", "hi"]}]', 1, "tasks[0].command", "not a list"),
    ("command-nul", '[{"command": "x"},\n {"command": "x\\u0000y"}]', 2, "tasks[1].command",
     "NUL"),
    ("trailing-comma", '{\n  "tasks": [\n    {"command": "x",}\n  ]\n}', 3, None,
     "The JSON is not valid at column 21"),
    ("unclosed", '{"tasks": [\n', 2, None, "The JSON is not valid"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [pytest.param(*row, id=name) for name, *row in JSON_ERRORS],
)
def test_json_errors_name_line_and_field(
    text: str, line: int | None, field: str | None, fragment: str
) -> None:
    error = error_of(text, "json")
    assert error.source == "tasks.json"
    assert_error(error, line, field, fragment)


def test_json_values_are_what_json_loads_gives() -> None:
    text = '[{"command": "a\\tb \\u00e9", "resources": {"cores": 1.5, "x": [1e2, null, true]}}]'
    (task,) = parse(text, "json", TaskDefaults())
    assert task.command == "a\tb é"
    assert task.resources == {"cores": 1.5, "x": [100.0, None, True]}


@pytest.mark.parametrize(
    ("file_format", "text"),
    [
        ("yaml", ""),
        ("yaml", "# nothing here\n"),
        ("yaml", "---\n"),
        ("json", "  \n"),
        ("text", ""),
        ("text", "# only\n\n   # comments\n"),
    ],
)
def test_an_empty_file_has_no_tasks(file_format: str, text: str) -> None:
    assert_error(error_of(text, file_format), None, None, "The file holds no tasks")


@pytest.mark.parametrize(
    ("file_format", "text", "line"),
    [("yaml", "defaults: {}\ntasks: []\n", 2), ("yaml", "tasks:\n", 1), ("json", "[]", 1)],
)
def test_an_empty_task_list_is_refused(file_format: str, text: str, line: int) -> None:
    assert_error(error_of(text, file_format), line, "tasks", "There are no tasks.")


# --- the command-line layer --------------------------------------------------------------


def test_bad_command_line_defaults_are_reported_as_the_command_line() -> None:
    bad_memory = TaskDefaults(resources={"memory": 4})
    error = error_of("- command: x\n", defaults=bad_memory)
    assert error.source == "command line"
    assert_error(error, None, "--memory", "has no unit")
    for attempts in (0, 101, True):
        error = error_of("echo x", "text", TaskDefaults(max_attempts=attempts))
        assert_error(error, None, "--max-attempts", "from 1 to 100")
    error = error_of("echo x", "text", TaskDefaults(env={"1X": "y"}))
    assert_error(error, None, "env.1X", "not an environment variable name")
    with pytest.raises(TaskFileError) as caught:
        task_from_command(["echo"], TaskDefaults(resources={"cores": 0}))
    assert_error(caught.value, None, "--cores", "must be more than zero")


def test_command_line_none_values_count_as_not_given() -> None:
    defaults = TaskDefaults(resources={"memory": None, "cores": 2}, max_attempts=None)
    (task,) = parse("- command: x\n", defaults=defaults)
    assert (task.resources, task.max_attempts) == ({"cores": 2}, 3)


def test_task_defaults_copy_their_mappings() -> None:
    resources: dict[str, Any] = {"memory": "1G"}
    defaults = TaskDefaults(resources=resources)
    resources["memory"] = "lots"
    assert parse("- command: x\n", defaults=defaults)[0].resources == {"memory": "1G"}


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tasks.yaml", "- command: echo hi\n"),
        ("tasks.YML", "- command: echo hi\n"),
        ("tasks.json", '[{"command": "echo hi"}]'),
        ("tasks.txt", "echo hi\n"),
        ("commands", "echo hi\n"),
    ],
)
def test_load_task_file_picks_the_format_from_the_extension(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    (task,) = load_task_file(path)
    assert task.command == "echo hi"
    assert load_task_file(str(path))[0].command == "echo hi"


def test_load_task_file_format_override(tmp_path: Path) -> None:
    path = tmp_path / "tasks.txt"
    path.write_text('[{"command": "echo hi", "name": "n"}]')
    assert load_task_file(path, file_format="json")[0].name == "n"
    assert load_task_file(path, file_format="JSON")[0].name == "n"
    assert load_task_file(path)[0].command == '[{"command": "echo hi", "name": "n"}]'
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path, file_format="toml")
    assert_error(caught.value, None, None, "use one of yaml, json, text")
    assert caught.value.source == str(path)


def test_load_task_file_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("- command: x\n  resources: {memory: 4}\n")
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path, TaskDefaults())
    assert str(caught.value).startswith(f"{path}:2: tasks[0].resources.memory: ")


def test_a_missing_file_names_the_path_and_the_os_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TaskFileError) as caught:
        load_task_file(missing)
    assert_error(caught.value, None, None, "No such file or directory")
    assert str(caught.value).startswith(f"{missing}: ")
    with pytest.raises(TaskFileError) as caught:
        load_task_file(tmp_path)
    assert "directory" in caught.value.problem.lower()


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".txt"])
def test_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tasks{suffix}"
    path.write_bytes(b"- command: ok\n\n- command: caf\xe9\n")
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path)
    assert_error(caught.value, 3, None, "Byte 0xe9 is not UTF-8")


# --- hostile input -----------------------------------------------------------------------


def test_a_file_above_the_size_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "tasks.txt"
    with open(path, "wb") as handle:  # sparse: nothing is written to the disk but its size
        handle.truncate(MAX_TASK_FILE_BYTES + 1)
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path)
    assert_error(caught.value, None, None, "larger than 64 MiB, the most a task file may be")


def test_an_endless_file_is_refused_after_the_limit() -> None:
    with pytest.raises(TaskFileError) as caught:
        load_task_file("/dev/zero")
    assert_error(caught.value, None, None, "larger than 64 MiB")


@pytest.mark.parametrize("file_format", ["yaml", "json", "text"])
def test_a_command_above_the_argument_limit_is_refused_naming_it(file_format: str) -> None:
    longest = "echo " + "x" * (MAX_COMMAND_BYTES - 5)
    texts = {
        "yaml": "- command: {}\n",
        "json": '[{{"command": "{}"}}]',
        "text": "{}\n",
    }
    assert parse(texts[file_format].format(longest), file_format)[0].command == longest
    error = error_of(texts[file_format].format(longest + "x"), file_format)
    assert error.line == 1
    assert f"{MAX_COMMAND_BYTES + 1:,} bytes long; the most is 65,536 bytes (64 KiB)" in str(error)
    # Counted in bytes, as the kernel counts: 2 bytes each in UTF-8.
    error_of(texts[file_format].format("echo " + "é" * (MAX_COMMAND_BYTES // 2)), file_format)


def test_a_command_line_above_the_argument_limit_is_refused() -> None:
    half = "x" * (MAX_COMMAND_BYTES // 2)
    with pytest.raises(TaskFileError, match="the most is 65,536 bytes"):
        task_from_command(["echo", half, half])


def test_recursive_and_exponential_aliases_are_refused_quickly() -> None:
    assert_error(error_of("- &a [*a]\n"), 1, "tasks[0][0]", "no complete anchor &a before it")
    # Five levels of ten make 100,000 values from 300 characters: over the limit, yet small
    # enough that without the limit the file would be read (and the test fail), not hang.
    lines = ["- command: x", "  resources:", '    a: &a ["x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in "bcde":
        previous = chr(ord(level) - 1)
        lines.append(f"    {level}: &{level} [{', '.join(['*' + previous] * 10)}]")
    error = error_of("\n".join(lines))
    assert_error(error, 7, "tasks[0].resources.e", "The aliases expand to too many values.")


@pytest.mark.parametrize("loader", LOADERS)
def test_deep_yaml_nesting_is_refused_without_crashing(
    monkeypatch: pytest.MonkeyPatch, loader: Any
) -> None:
    # libyaml's own composer would overflow the C stack here and kill the process.
    monkeypatch.setattr(located_tree, "_YAML_LOADER", loader)
    error = error_of("tasks:\n  - command: x\n    resources:\n      x: " + "[" * 50_000)
    assert_error(error, 4, None, "Values nest more than 100 levels deep.")


def test_deep_json_nesting_is_refused() -> None:
    shallow_enough = '[{"command": "x", "resources": {"x":\n' + "[" * 150 + "]" * 150 + "}}]"
    assert_error(error_of(shallow_enough, "json"), 2, None, "more than 100 levels deep")
    # Deeper than json.loads itself can go.
    assert_error(error_of("[" * 50_000 + "]" * 50_000, "json"), None, None, "nested too deeply")


def test_error_message_format_leaves_out_missing_parts() -> None:
    assert str(TaskFileError("t.yaml", 12, "tasks[3].resources.memory", "Bad.")) == (
        "t.yaml:12: tasks[3].resources.memory: Bad."
    )
    assert str(TaskFileError("t.yaml", None, "tasks", "Bad.")) == "t.yaml: tasks: Bad."
    assert str(TaskFileError("t.yaml", 3, None, "Bad.")) == "t.yaml:3: Bad."
    error = TaskFileError("t.json", 1, None, "Bad.")
    assert (error.source, error.line, error.field, error.problem) == ("t.json", 1, None, "Bad.")


def test_yaml_and_json_give_the_same_tasks() -> None:
    as_yaml = parse(FULL_YAML)
    as_json = parse(json.dumps(yaml.safe_load(FULL_YAML)), "json")
    assert [dataclass_without_line(task) for task in as_yaml] == [
        dataclass_without_line(task) for task in as_json
    ]


def dataclass_without_line(task: TaskDefinition) -> tuple[Any, ...]:
    return (task.name, task.command, task.resources, task.env, task.max_attempts,
            task.resource_scale, task.fallback_queues)  # fmt: skip


# -- pack -------------------------------------------------------------------------------------


def test_pack_is_written_in_one_form_and_a_task_can_turn_the_default_off() -> None:
    text = yaml_text(
        """
        defaults:
          resources: {pack: "max_tasks=50,max_runtime=10m"}
        tasks:
          - {name: packed, command: "true"}
          - {name: own, command: "true", resources: {pack: {max_tasks: 5}}}
          - {name: alone, command: "true", resources: {pack: off}}
        """
    )
    packed, own, alone = parse(text, defaults=TaskDefaults())
    assert packed.resources["pack"] == {"max_tasks": 50, "max_runtime": 600}
    assert own.resources["pack"] == {"max_tasks": 5}
    assert "pack" not in alone.resources


def test_pack_from_the_command_line_is_every_task_default() -> None:
    defaults = TaskDefaults(resources={"pack": "max_tasks=8"})
    [task] = parse("echo hi\n", "text", defaults)
    assert task.resources["pack"] == {"max_tasks": 8}


def test_a_bad_pack_names_its_line_and_field() -> None:
    text = yaml_text(
        """
        tasks:
          - name: bad
            command: "true"
            resources:
              pack: {max_tasks: 0}
        """
    )
    assert_error(error_of(text), 5, "tasks[0].resources.pack", "max_tasks 0")


def test_a_bad_pack_runtime_names_the_line_of_pack() -> None:
    text = yaml_text(
        """
        tasks:
          - name: bad
            command: "true"
            resources:
              pack: {max_tasks: 2, max_runtime: soon}
        """
    )
    assert_error(error_of(text), 5, "tasks[0].resources.pack", "'pack.max_runtime'")


def test_a_bad_pack_on_the_command_line_names_the_flag() -> None:
    error = error_of("echo hi\n", "text", TaskDefaults(resources={"pack": "max_tasks=lots"}))
    assert_error(error, None, "--pack", "max_tasks 'lots'")
