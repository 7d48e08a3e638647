"""`jobfleet run` (the main job) and `jobfleet kill`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import click

from jobfleet.core.cli.common import (
    LEDGER_ID,
    RUN_REF,
    SECONDS,
    console,
    error_console,
    json_option,
    ledger_option,
    open_ledger,
    print_json,
)
from jobfleet.core.errors import JobfleetError

if TYPE_CHECKING:
    from jobfleet.core.host.ledger import LeaseError, Ledger, RunStatus
    from jobfleet.core.host.service import DistributorService
    from jobfleet.core.host.service import Progress as RunProgress
    from jobfleet.core.host.taskfile import TaskDefinition
    from jobfleet.core.settings import SettingOption

# The host (ledger, service, task files) and rich are imported inside the commands, when they
# run: `jobfleet --help` must not pay for them (see common.py).

# A run of at most this many tasks ends with a table of every task; a larger one with a
# summary (counts, then at most HIGHLIGHT_ROWS tasks not done, slowest and hungriest): drawing
# a table of 100,000 rows took longer than the run. `status RUN --all` shows every task.
FULL_TABLE_TASKS: Final = 50
HIGHLIGHT_ROWS: Final = 10


class _RunCommand(click.Command):
    """`run`, with every installed backend's settings as options and `-- COMMAND…` kept whole.

    The backends' options are added when the command is used, not when the CLI is imported,
    so that other commands never load every plugin.
    """

    _plugin_options: list[SettingOption] | None = None

    def plugin_options(self) -> list[SettingOption]:
        if self._plugin_options is None:
            from jobfleet.core.cli.options import add_setting_options
            from jobfleet.core.plugins import PluginStatus, default_registry

            registry = default_registry()
            found: list[SettingOption] = []
            for info in registry.list_plugins():
                if info.status is not PluginStatus.OK:
                    continue
                if "backend" in info.kinds:
                    found.extend(registry.get_cluster(info.name).setting_options())
                elif "provisioner" in info.kinds:
                    found.extend(registry.get_provisioner(info.name).setting_options())
            self._plugin_options = found
            add_setting_options(self, found)
        return self._plugin_options

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self.plugin_options()
        if "--" in args:
            cut = args.index("--")
            ctx.meta["jobfleet_command"] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.plugin_options()
        super().format_options(ctx, formatter)


@click.command(cls=_RunCommand)
@click.argument("task_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--cluster",
    default="multiprocess",
    show_default=True,
    help="The backend to run on (see `jobfleet plugins`).",
)
@click.option("--queue", help="Queue for tasks that name none (default: 'default').")
@click.option(
    "--new-queue",
    "new_queues",
    is_flag=True,
    help="Create the queues the tasks name that the ledger does not have, without limits of "
    "their own (otherwise refused: add them first with `jobfleet queues add`).",
)
@click.option("--cores", help="Cores per task unless the task says, e.g. 2 or 0.5.")
@click.option("--memory", help="Memory per task unless the task says, e.g. 512M or 4G.")
@click.option(
    "--runtime", help="Runtime limit per task unless the task says, e.g. 90, 10m, 1:30:00."
)
@click.option("--gpus", help="GPUs per task unless the task says, e.g. 1 or a100:2.")
@click.option(
    "--pack",
    metavar="max_tasks=N[,max_runtime=T]",
    help="Let a batch backend run up to N short tasks of an array one after another in one "
    "job (their runtimes adding up to at most T), unless the task says (`pack:`), e.g. "
    "max_tasks=50,max_runtime=10m. See docs/resources.md.",
)
@click.option("--max-attempts", type=click.IntRange(1, 100), help="Attempts per task (default 3).")
@click.option(
    "--array-size",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Most tasks with the same resources submitted as one array.",
)
@click.option("--name", help="A name for the run (default: from the first task).")
@click.option(
    "--resume", "resume", metavar="RUN", type=RUN_REF, help="Continue a run whose service stopped."
)
@click.option(
    "--detach", is_flag=True, help="Run the service in the background; print the run id and exit."
)
@click.option(
    "--channel",
    "channel_transport",
    type=click.Choice(["file", "http"]),
    help="How task wrappers reach the host: the run's directory (file), or an HTTP server the "
    "host runs (http, for nodes without a shared file system). Default: file, or http when "
    "the backend needs it.",
)
@click.option(
    "--channel-bind",
    metavar="HOST:PORT",
    envvar="JOBFLEET_CHANNEL_BIND",
    help="Where the http channel listens (default 127.0.0.1:0, any free port; "
    "$JOBFLEET_CHANNEL_BIND).",
)
@click.option(
    "--channel-address",
    metavar="URL",
    envvar="JOBFLEET_CHANNEL_ADDRESS",
    help="The base URL the nodes reach the http channel at, when it differs from the bind "
    "address, e.g. http://10.0.0.5:8765 ($JOBFLEET_CHANNEL_ADDRESS).",
)
@click.option(
    "--channel-tls-cert",
    metavar="FILE",
    envvar="JOBFLEET_CHANNEL_TLS_CERT",
    help="Serve the http channel over TLS with this certificate (PEM; with --channel-tls-key).",
)
@click.option(
    "--channel-tls-key",
    metavar="FILE",
    envvar="JOBFLEET_CHANNEL_TLS_KEY",
    help="The private key of --channel-tls-cert (PEM).",
)
@click.option(
    "--autoscale",
    is_flag=True,
    help="Size the cluster to the work with a provisioner (needs --provisioner, --node-types "
    "and --max-nodes, and a backend whose nodes can be drained; see docs/scaling.md).",
)
@click.option("--provisioner", help="The provisioner plugin that adds nodes (`jobfleet plugins`).")
@click.option(
    "--node-types",
    metavar="TYPE[:BID],…",
    help="Node types to launch, in order of preference, each with an optional spot bid, "
    "e.g. c5.large:0.05,m5.xlarge.",
)
@click.option(
    "--max-nodes",
    metavar="N[,N…]",
    help="Most nodes of each node type: one count for every type, or one per type.",
)
@click.option(
    "--min-nodes",
    metavar="N[,N…]",
    default="0",
    show_default=True,
    help="Fewest nodes of each node type, kept even without work.",
)
@click.option(
    "--scale-interval",
    type=SECONDS,
    default=30.0,
    show_default=True,
    help="Seconds between two scaling decisions.",
)
@ledger_option
@json_option
@click.pass_context
def run(ctx: click.Context, /, task_file: Path | None, **flags: Any) -> None:
    """Run the tasks of TASK_FILE, or one command given after `--`, until all are over.

    TASK_FILE is YAML or JSON (tasks with name, command, resources, env, max_attempts, and
    `defaults` at the top) or plain text (one command per line). A malformed file is refused,
    naming the line and field, before anything is written.

    \b
    Examples:
      jobfleet run examples/hello.yaml
      jobfleet run --memory 2G commands.txt
      jobfleet run --cluster slurm --queue short -- python train.py --epochs 3
      jobfleet run --resume 12

    Failed attempts are retried: out of memory or time with 1.5× the resource (clamped to the
    queue, then fallback queues), other errors as they were, up to --max-attempts. Ctrl-C
    kills the run's tasks; use --detach to leave the run working in the background. The exit
    status is 0 only when every task is done.
    """
    from jobfleet.core.host import queries
    from jobfleet.core.host.ledger import RunStatus

    command = ctx.meta.get("jobfleet_command")
    ledger = open_ledger(flags["ledger_url"])
    with ledger:
        if flags["resume"] is not None:
            if task_file is not None or command:
                raise click.UsageError("--resume takes no task file or command.")
            if flags["channel_transport"] is not None:
                raise click.UsageError(
                    "--resume serves the run's channel as it was created; --channel is for "
                    "new runs."
                )
            with ledger.read_session() as session:
                run_id = queries.find_run(session, flags["resume"]).id
        else:
            run_id = _create(ledger, task_file, command, ctx, flags)
        if flags["detach"]:
            if flags["resume"] is not None:
                _check_resumable(ledger, run_id)
            _detach(ledger, run_id, flags["as_json"])
            return
        status = _drive(ledger, run_id, flags["as_json"])
    ctx.exit(0 if status is RunStatus.DONE else 1)


def _create(
    ledger: Ledger,
    task_file: Path | None,
    command: Sequence[str] | None,
    ctx: click.Context,
    flags: Mapping[str, Any],
) -> int:
    from jobfleet.core.cli.options import setting_values
    from jobfleet.core.host.runs import ServiceOptions, create_run

    definitions = _tasks(task_file, command, flags)
    command_spec = ctx.command
    assert isinstance(command_spec, _RunCommand)
    settings = setting_values(
        [o for o in command_spec.plugin_options() if o.cluster == flags["cluster"]], ctx.params
    )
    autoscale = _autoscale_options(ctx, flags, command_spec.plugin_options())
    run_id = create_run(
        ledger,
        definitions,
        cluster=flags["cluster"],
        name=flags["name"],
        cluster_settings=settings,
        options=ServiceOptions(array_size=flags["array_size"]),
        new_queues=flags["new_queues"],
        channel=_channel_options(ctx, flags),
        autoscale=autoscale,
    )
    error_console().print(
        f"run {run_id}: {len(definitions)} task(s) on {flags['cluster']} "
        f"(ledger {ledger.safe_url})",
        highlight=False,
        markup=False,
    )
    return run_id


_AUTOSCALE_FLAGS: Final = ("provisioner", "node_types", "max_nodes")


def _autoscale_options(
    ctx: click.Context, flags: Mapping[str, Any], plugin_options: Sequence[SettingOption]
) -> Any:
    """The run's `AutoscaleOptions` from the flags, or None without --autoscale."""
    from click.core import ParameterSource

    from jobfleet.core.cli.options import setting_values
    from jobfleet.core.host.autoscale import AutoscaleOptions

    if not flags["autoscale"]:
        given = [
            f"--{name.replace('_', '-')}"
            for name in (*_AUTOSCALE_FLAGS, "min_nodes", "scale_interval")
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --autoscale.")
        return None
    missing = [f"--{name.replace('_', '-')}" for name in _AUTOSCALE_FLAGS if not flags[name]]
    if missing:
        raise click.UsageError(f"--autoscale needs {', '.join(missing)}.")
    provisioner = flags["provisioner"]
    settings = setting_values([o for o in plugin_options if o.cluster == provisioner], ctx.params)
    return AutoscaleOptions(
        provisioner=provisioner,
        node_types=flags["node_types"],
        max_nodes=flags["max_nodes"],
        min_nodes=flags["min_nodes"],
        interval=flags["scale_interval"],
        provisioner_settings=settings,
    )


def _channel_options(ctx: click.Context, flags: Mapping[str, Any]) -> Any:
    """The run's channel options from the flags. Without --channel, an http option given on
    the command line means http; otherwise the backend chooses (options from the environment
    apply if it chooses http)."""
    from click.core import ParameterSource

    from jobfleet.core.host.runs import ChannelOptions

    given = {
        "bind": flags["channel_bind"],
        "address": flags["channel_address"],
        "tls_cert": flags["channel_tls_cert"],
        "tls_key": flags["channel_tls_key"],
    }
    on_command_line = [
        f"--channel-{key.replace('_', '-')}"
        for key, value in given.items()
        if value and ctx.get_parameter_source(f"channel_{key}") is ParameterSource.COMMANDLINE
    ]
    transport = flags["channel_transport"]
    if transport == "file":
        if on_command_line:
            raise click.UsageError(f"{', '.join(on_command_line)} only apply to --channel http.")
        return ChannelOptions()
    if transport is None:
        transport = "http" if on_command_line else "auto"
    values = {key: value for key, value in given.items() if value}
    for key in ("tls_cert", "tls_key"):
        if key in values:
            values[key] = str(Path(values[key]).resolve())
    return ChannelOptions(transport=transport, **values)


def _tasks(
    task_file: Path | None, command: Sequence[str] | None, flags: Mapping[str, Any]
) -> list[TaskDefinition]:
    from jobfleet.core.host.taskfile import TaskDefaults, load_task_file, task_from_command

    resources = {
        key: flags[key]
        for key in ("queue", "cores", "memory", "runtime", "gpus", "pack")
        if flags[key] is not None
    }
    defaults = TaskDefaults(resources=resources, max_attempts=flags["max_attempts"])
    if task_file is not None and command:
        raise click.UsageError("Give a task file or a command after `--`, not both.")
    if task_file is not None:
        return load_task_file(task_file, defaults)
    if command:
        return [task_from_command(command, defaults, name=flags["name"])]
    raise click.UsageError("Give a task file, or a command after `--` (see --help).")


# -- running the service in the foreground ----------------------------------------------------


def _drive(ledger: Ledger, run_id: int, as_json: bool) -> RunStatus:
    from jobfleet.core.host.ledger import FINAL_RUN_STATUSES, LeaseError
    from jobfleet.core.host.service import DistributorService

    service = DistributorService(ledger, run_id)
    try:
        service.start()
    except LeaseError as exc:
        raise _taken(run_id, exc) from None
    try:
        with _interrupts(service) as received, _progress_bar(as_json) as show:
            final = service.run_until_done(show)
            if final.status not in FINAL_RUN_STATUSES:  # stopped by a signal: carry out the kill
                _request_run_kill(ledger, run_id, received[0])
                service.clear_stop()
                final = service.run_until_done(show)
    finally:
        service.close()
    _summary(ledger, run_id, final, as_json)
    return final.status


def _taken(run_id: int, error: LeaseError) -> JobfleetError:
    return JobfleetError(
        f"Run {run_id} is being run by another service ({error}). Follow it with "
        f"`jobfleet status {run_id}` or `jobfleet events {run_id} --follow`."
    )


@contextmanager
def _interrupts(service: DistributorService) -> Iterator[list[int]]:
    """Ctrl-C or SIGTERM stop the rounds; the caller then asks for the run's kill.

    The handler only records the signal: writing to the ledger from a signal handler could
    wait on the very transaction it interrupted.
    """
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        service.request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _request_run_kill(ledger: Ledger, run_id: int, signum: int) -> None:
    from jobfleet.core.host import kills

    error_console().print(
        f"\n{signal.Signals(signum).name}: killing the tasks of run {run_id} …",
        highlight=False,
        markup=False,
    )
    kills.request_run_kill(ledger, run_id)


@contextmanager
def _progress_bar(as_json: bool) -> Iterator[Any]:
    """A progress bar on stderr (none for --json or when stderr is not a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from jobfleet.core.host.ledger import InstanceState

    state_names = {state.value: state.name.lower() for state in InstanceState}
    err = error_console()
    if as_json or not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("run {task.fields[run]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("tasks", total=None, run="", states="")

        def show(progress: RunProgress) -> None:
            states = "  ".join(
                f"{state_names.get(k, k)} {v}" for k, v in sorted(progress.state_counts.items())
            )
            bar.update(
                task,
                total=progress.tasks_total,
                completed=progress.tasks_over,
                run=progress.run_id,
                states=states,
            )

        yield show


def _summary(ledger: Ledger, run_id: int, final: RunProgress, as_json: bool) -> None:
    from jobfleet.core.cli.inspect_commands import task_table
    from jobfleet.core.host import queries

    if not as_json and final.tasks_total > FULL_TABLE_TASKS:
        _highlights(ledger, run_id, final)
        return
    with ledger.read_session() as session:
        rows = queries.task_rows(session, run_id)
    if as_json:
        print_json(
            {
                "run": run_id,
                "status": final.status.value,
                "task_counts": dict(final.task_counts),
                "state_counts": dict(final.state_counts),
                "tasks": [row.to_dict() for row in rows],
            }
        )
        return
    out = console()
    out.print(task_table(rows, title=f"run {run_id}: {final.status.value}"))
    _not_all_done(run_id, final)


def _highlights(ledger: Ledger, run_id: int, final: RunProgress) -> None:
    """A large run's end: its counts, then a few tasks worth a look, never every task."""
    from jobfleet.core.cli.inspect_commands import task_table
    from jobfleet.core.host import queries
    from jobfleet.core.host.ledger import InstanceState

    state_names = {state.value: state.name.lower() for state in InstanceState}
    with ledger.read_session() as session:
        found = queries.run_highlights(session, run_id, limit=HIGHLIGHT_ROWS)
    out = console()
    tasks = ", ".join(f"{state} {count}" for state, count in final.task_counts.items())
    instances = ", ".join(
        f"{letter} {state_names.get(letter, letter)} {count}"
        for letter, count in final.state_counts.items()
    )
    for line in (
        f"run {run_id}: {final.status.value}; {final.tasks_total} tasks: {tasks}",
        f"attempts: {instances}",
    ):
        out.print(line, highlight=False, markup=False)
    if found.not_done:
        shown = len(found.not_done)
        title = f"not done: {shown}" + (
            f" of {found.not_done_total}" if found.not_done_total > shown else ""
        )
        out.print(task_table(found.not_done, title=title))
    if found.slowest:
        out.print(task_table(found.slowest, title=f"slowest {len(found.slowest)}"))
    if found.hungriest:
        out.print(task_table(found.hungriest, title=f"most memory {len(found.hungriest)}"))
    out.print(
        f"Every task: jobfleet status {run_id} --all (or run with --json).",
        highlight=False,
        markup=False,
    )
    _not_all_done(run_id, final)


def _not_all_done(run_id: int, final: RunProgress) -> None:
    from jobfleet.core.host.ledger import RunStatus

    if final.status is not RunStatus.DONE:
        console().print(
            f"Not every task is done. See `jobfleet status {run_id}`, "
            f"`jobfleet events {run_id}` and `jobfleet logs INSTANCE --stderr`.",
            highlight=False,
            markup=False,
        )


# -- detached runs -----------------------------------------------------------------------------


def _check_resumable(ledger: Ledger, run_id: int) -> None:
    """What the detached service would refuse (the run is over, a live service has it), said
    here: after detaching, a refusal would only reach its log."""
    from jobfleet.core.host.ledger import LeaseError
    from jobfleet.core.host.service import check_claimable

    try:
        check_claimable(ledger, run_id)
    except LeaseError as exc:
        raise _taken(run_id, exc) from None


def _detach(ledger: Ledger, run_id: int, as_json: bool) -> None:
    """Start `jobfleet run --resume RUN` in its own session, its output in the run's directory."""
    from jobfleet.core.host import queries
    from jobfleet.core.host.ledger import STDIN_URL
    from jobfleet.core.private import open_private

    with ledger.read_session() as session:
        work_dir = queries.run_work_dir(session, run_id)
    log_path = Path(work_dir or ".", "service.log")
    argv = [
        sys.executable,
        "-m",
        "jobfleet.core.cli",
        "run",
        "--resume",
        str(run_id),
        "--ledger",
        STDIN_URL,
    ]
    # The ledger URL may hold a password: it goes through a pipe (`--ledger -`), never on the
    # command line (which anyone on the machine may read) nor in an environment variable
    # (which every task would inherit).
    with open(open_private(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(ledger.url.render_as_string(hide_password=False).encode() + b"\n")
    if as_json:
        print_json({"run": run_id, "pid": process.pid, "log": str(log_path)})
        return
    console().print(
        f"run {run_id} continues in the background (pid {process.pid}, log {log_path}).\n"
        f"Follow it: jobfleet status {run_id} · jobfleet events {run_id} --follow",
        highlight=False,
        markup=False,
    )


# -- kill ---------------------------------------------------------------------------------------


@click.command()
@click.argument("run_ref", metavar="[RUN]", type=RUN_REF, required=False)
@click.option(
    "--instance",
    "instance_ids",
    type=LEDGER_ID,
    multiple=True,
    help="Kill only this task instance (repeatable); RUN may then be left out.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the kill is carried out.",
)
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="Seconds to wait.")
@ledger_option
@json_option
def kill(
    run_ref: str | None,
    instance_ids: tuple[int, ...],
    wait: bool,
    timeout: float,
    ledger_url: str | None,
    as_json: bool,
) -> None:
    """Kill a run (every task not yet over) or single task instances.

    The kill is written to the ledger; the service that owns the run carries it out. When no
    service owns the run (it was stopped, or crashed), this command carries it out itself.
    Killed tasks are not retried.
    """
    from jobfleet.core.host import kills

    if run_ref is None and not instance_ids:
        raise click.UsageError("Name a RUN, or --instance ID.")
    with open_ledger(ledger_url) as ledger:
        result = kills.kill(ledger, run_ref, instance_ids, wait=wait, timeout=timeout)
    if as_json:
        print_json(
            {
                "run": result.run_id,
                "status": result.status,
                "killed": result.killed,
                "carried_out_here": result.carried_out_here,
            }
        )
        return
    what = f"instances {', '.join(map(str, instance_ids))}" if instance_ids else "the run"
    done = result.carried_out_here or wait
    console().print(
        f"run {result.run_id}: kill of {what} "
        + ("carried out" if done else "requested")
        + f"; {len(result.killed)} instance(s) killed; run status {result.status}.",
        highlight=False,
        markup=False,
    )


COMMANDS = [run, kill]
