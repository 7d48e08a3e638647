"""`jobfleet-worker-node`: run one task instance (or one array step) and report back.

    jobfleet-worker-node job   --task-instance-id N             --cluster NAME --host-url URL
    jobfleet-worker-node array --array-id A --batch-number B     --cluster NAME --host-url URL
    jobfleet-worker-node array --array-id A --batch-number B --pack K --array-length N  (same)
    jobfleet-worker-node slot                                    --cluster NAME --host-url URL

With `--pack K`, this node's array element e runs steps e*K … e*K+K-1 (below N) one after
another, each its own task instance (worker_node/pack.py). `slot` runs task after task, each
sent on stdin by a local distributor (`slot.py`).

Exit codes: the command's own when it ran (128 + N when signal N ended it); 240 when the
wrapper failed; 241 when the host speaks another channel protocol version; 2 for a bad command
line. Every failure after the task instance is known is also sent as a final report.

Kept light on purpose: it runs around every task on every node. It imports the channel and
the worker-node class of the plugin named by --cluster (through its `jobfleet.worker_nodes`
entry point; the plugin registry and pluggy only for a plugin without one); no database, no CLI
library, no other plugin. worker_node/tests/test_lean_start.py lists what it must not import.
"""

from __future__ import annotations

from jobfleet.worker_node import phases

phases.mark("interpreter start")

# The hot path (a well-formed command line, a task that runs) imports neither argparse (nor the
# shutil, gettext and re it pulls in) nor typing: `_fast_parse` reads the one shape a backend
# writes, and anything else goes to argparse, which stays the reference for every message.
import os  # noqa: E402
import sys  # noqa: E402

from jobfleet.core import wrapper  # noqa: E402
from jobfleet.core.channel import (  # noqa: E402
    PROTOCOL_VERSION,
    Channel,
    EventWriter,
    TaskSpec,
    open_channel,
)
from jobfleet.core.errors import ChannelError, JobfleetError, ProtocolVersionError  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any

    from jobfleet.core.exit_info import ErrorState

phases.mark("imports")


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="jobfleet-worker-node",
        description="Run one jobfleet task instance on this node and report it to the host.",
        epilog="Exit codes: the command's own; 240 wrapper failed; 241 protocol version "
        "mismatch; 2 bad command line.",
    )
    parser.add_argument(
        "--version", action=_version_action(), nargs=0, help="Show the version and exit."
    )
    commands = parser.add_subparsers(dest="mode", required=True, metavar="{job,array,slot}")
    job = commands.add_parser("job", help="Run one task instance.")
    job.add_argument("--task-instance-id", type=_non_negative, required=True, metavar="N")
    array = commands.add_parser("array", help="Run this node's step of an array batch.")
    array.add_argument("--array-id", type=_non_negative, required=True, metavar="A")
    array.add_argument("--batch-number", type=_non_negative, required=True, metavar="B")
    array.add_argument(
        "--pack", type=_positive, metavar="K", help="Run K steps of the array, one after another."
    )
    array.add_argument(
        "--array-length", type=_positive, metavar="N", help="The array's steps (with --pack)."
    )
    slot = commands.add_parser(
        "slot", help="Run task after task, as a local distributor sends them on stdin."
    )
    for sub in (job, array, slot):
        _common_options(sub)
    return parser


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        default=os.environ.get("JOBFLEET_CLUSTER"),
        help="Cluster type whose worker node to use (default: $JOBFLEET_CLUSTER).",
    )
    parser.add_argument(
        "--host-url",
        default=os.environ.get(wrapper.HOST_URL_VARIABLE),
        help="The host channel, e.g. file:///shared/jobfleet/channel or "
        "http://host:port/runs/KEY (token in $JOBFLEET_CHANNEL_TOKEN or the file "
        "$JOBFLEET_CHANNEL_TOKEN_FILE) (default: $JOBFLEET_HOST_URL).",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=wrapper.DEFAULT_KILL_GRACE,
        metavar="SECONDS",
        help="Seconds between SIGTERM and SIGKILL when the task is stopped (default: 10).",
    )
    parser.add_argument(
        "--cgroup",
        choices=wrapper.CGROUP_MODES,
        default=wrapper.DEFAULT_CGROUP,
        help="Put the task in a memory cgroup of its own: when the spec limits its memory "
        "(auto, the default), always (exact peaks, at ~20 ms per task), or never.",
    )


_IDS: dict[str, tuple[str, ...]] = {
    "job": ("task_instance_id",),
    "array": ("array_id", "batch_number"),
    "slot": (),
}
_COMMON = ("cluster", "host_url", "kill_grace", "cgroup")
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "job": (),
    "array": ("pack", "array_length"),
    "slot": (),
}


class Arguments:
    """The parsed command line: the attributes argparse's namespace has for the same argv."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # like argparse.Namespace: any attribute, for the type checker

        def __getattr__(self, name: str) -> Any: ...

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Arguments({vars(self)!r})"


def parse_args(argv: list[str] | None = None) -> Arguments | argparse.Namespace:
    """The command line, read by `_fast_parse` when it can, else by argparse."""
    args = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_parse(args)
    return fast if fast is not None else _parser().parse_args(args)


def _fast_parse(args: list[str]) -> Arguments | None:
    """The command line as argparse would read it, for the plain form a backend writes:
    `job|array` and then every option spelled out in full, each once, as `--name value` or
    `--name=value`, each value valid. None for anything else (help, abbreviations, errors,
    a value starting with "-"), which argparse then reads and, where wrong, explains."""
    if not args or args[0] not in _IDS:
        return None
    mode = args[0]
    names = (*_IDS[mode], *_OPTIONAL[mode], *_COMMON)
    allowed = {"--" + name.replace("_", "-"): name for name in names}
    given: dict[str, str] = {}
    position = 1
    while position < len(args):
        token = args[position]
        name, equals, value = token.partition("=")
        if not equals:
            if position + 1 >= len(args):
                return None
            value = args[position + 1]
            position += 1
        position += 1
        key = allowed.get(name)
        if key is None or key in given or value.startswith("-"):
            return None
        given[key] = value
    values: dict[str, Any] = {
        "version": None,  # as argparse's namespace has it
        "mode": mode,
        "cluster": given.get("cluster", os.environ.get("JOBFLEET_CLUSTER")),
        "host_url": given.get("host_url", os.environ.get(wrapper.HOST_URL_VARIABLE)),
        "kill_grace": wrapper.DEFAULT_KILL_GRACE,
        "cgroup": given.get("cgroup", wrapper.DEFAULT_CGROUP),
    }
    if values["cgroup"] not in wrapper.CGROUP_MODES:
        return None
    try:
        if "kill_grace" in given:
            values["kill_grace"] = float(given["kill_grace"])
        for key in _IDS[mode]:
            number = int(given[key])  # KeyError: a required option is missing
            if number < 0:
                return None
            values[key] = number
        for key in _OPTIONAL[mode]:
            values[key] = int(given[key]) if key in given else None
            if values[key] is not None and values[key] < 1:
                return None
    except (KeyError, ValueError):
        return None
    return Arguments(**values)


def _non_negative(text: str) -> int:
    import argparse

    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive(text: str) -> int:
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _version_action() -> type[argparse.Action]:
    import argparse

    class VersionAction(argparse.Action):
        """Like argparse's "version" action, but reads package metadata only when asked:
        importlib.metadata costs ~20 ms, and the wrapper starts around every task."""

        def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
            sys.stdout.write(_version() + "\n")
            parser.exit()

    return VersionAction


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("jobfleet-worker-node")
    except PackageNotFoundError:
        mine = "unknown"
    return f"jobfleet-worker-node {mine} (channel protocol {PROTOCOL_VERSION})"


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    phases.mark("done")
    phases.write()
    if code >= wrapper.TRUNCATED_STATUS:
        # Some schedulers' accounting keeps 7 bits of a job's exit status (Slurm: 240 reads
        # 112): say the whole of it where the job's output goes.
        sys.stderr.write(wrapper.status_line(code))
        sys.stderr.flush()
    return code


def run() -> None:
    """The console script: `main`, then an immediate exit.

    Once the final report is durable there is nothing left to do, and an orderly interpreter
    shutdown (module teardown, freeing every object) costs a short task several milliseconds:
    flush the standard streams and leave with `os._exit`, unless a thread that is not a daemon
    still runs, which only the orderly way waits for.
    """
    code = main()
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a reader that went away
            stream.flush()
    threading = sys.modules.get("threading")
    if threading is not None and any(
        thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
        for thread in threading.enumerate()
    ):
        sys.exit(code)
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    if os.environ.get(wrapper.TERMINATION_LOG_VARIABLE):
        from jobfleet.worker_node.termination import mark_started

        mark_started()  # replaced by the final record, unless the wrapper is killed first
    args = parse_args(argv)
    for name in ("cluster", "host_url"):
        if not getattr(args, name):
            option, variable = name.replace("_", "-"), f"JOBFLEET_{name.upper()}"
            _say(f"--{option} is required (or set {variable}).")
            return wrapper.USAGE_ERROR
    try:
        channel = open_channel(args.host_url)
        phases.mark("channel")
    except JobfleetError as exc:
        _say(f"cannot open the host channel {args.host_url}: {exc}")
        return wrapper.WRAPPER_FAILED
    try:
        if args.mode == "slot":
            from jobfleet.worker_node.slot import serve

            return serve(args, channel)
        return _run(args, channel)
    finally:
        channel.close()


def _run(
    args: Arguments | argparse.Namespace,
    channel: Channel,
    make_runner: Callable[..., Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the task instance `args` name and report it; `make_runner(spec, node, writer,
    options)` builds its runner (a `TaskRunner` by default; the slot worker's own), and
    `environ` is where the worker node reads its ids (the process environment by default)."""
    writer: EventWriter | None = None
    try:
        if args.mode == "job":
            # Known before anything can fail, so every later failure is reported for it.
            writer = channel.open_writer(args.task_instance_id)
        node = _worker_node(args.cluster)
        if environ is not None and hasattr(node, "environ"):
            node.environ = environ
        phases.mark("plugin")
        step = node.array_step_id if args.mode == "array" else None
        if args.mode == "array" and getattr(args, "pack", None):
            from jobfleet.worker_node.pack import run_pack

            return run_pack(args, channel, node, step)
        if writer is None:
            spec = _array_spec(args, channel, step)
            writer = channel.open_writer(spec.task_instance_id)
        else:
            spec = channel.get_spec(args.task_instance_id)
        # Every report from now on says which run's spec it ran: the host refuses the rest.
        writer.run_token = spec.run_token
        phases.mark("spec")
        from jobfleet.worker_node.runner import RunOptions, TaskRunner

        phases.mark("runner imports")

        options = RunOptions(kill_grace=args.kill_grace, array_step=step, cgroup=args.cgroup)
        runner = (make_runner or TaskRunner)(spec, node, writer, options)
        return int(runner.run())
    except ProtocolVersionError as exc:
        _fail(writer, "F", str(exc))
        return wrapper.VERSION_MISMATCH
    except JobfleetError as exc:
        # Known failures: no spec, no plugin, a log directory that cannot be written.
        _fail(writer, "F", f"{type(exc).__name__}: {exc}")
        return wrapper.WRAPPER_FAILED
    except BaseException as exc:  # whatever happens, report it before dying
        if isinstance(exc, KeyboardInterrupt | SystemExit) and writer is None:
            raise
        import traceback

        _fail(
            writer,
            "U",
            "the worker-node wrapper failed:\n" + traceback.format_exc(),
        )
        return wrapper.WRAPPER_FAILED
    finally:
        if writer is not None:
            writer.close()


run_task = _run


_NODE_CLASSES: dict[str, Any] = {}
"""Worker-node classes by cluster, once found: a slot worker runs many tasks of one cluster, and
finding a class costs a look at the plugins' entry points."""


def _worker_node(cluster: str) -> Any:
    found = _NODE_CLASSES.get(cluster)
    if found is None:
        # The plugin's `jobfleet.worker_nodes` entry point when it has one: no pluggy, no hooks.
        from jobfleet.core.worker_nodes import find_worker_node_class

        found = find_worker_node_class(cluster)
        if found is None:  # an older plugin, or a failure the full discovery explains
            from jobfleet.core.plugins import get_worker_node_class

            found = get_worker_node_class(cluster)
        _NODE_CLASSES[cluster] = found
    return found()


def _array_spec(
    args: Arguments | argparse.Namespace, channel: Channel, step: int | None
) -> TaskSpec:
    if step is None:
        raise ChannelError(
            f"The {args.cluster} worker node found no array step in this task's environment, "
            "so it cannot tell which task instance of the array to run."
        )
    return channel.get_array_step(args.array_id, args.batch_number, step)


def _fail(writer: EventWriter | None, state: ErrorState | str, message: str) -> None:
    """Send a final report for a run that failed in the wrapper, and say it on stderr too."""
    _say(message)
    from jobfleet.core.channel import FinalReport
    from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord

    record = ExitRecord(ExitReason.LAUNCHER_ERROR, message=message)
    report = FinalReport(ErrorState(state), message, exit=record)
    from jobfleet.worker_node.termination import write_termination_log

    write_termination_log(report)  # also when there is no channel to report through
    if writer is None:
        return
    try:
        writer.send_report(report, durable=True)
    except Exception as exc:  # nothing left to report through
        _say(f"the final report could not be sent either: {exc}")


def _say(message: str) -> None:
    sys.stderr.write(f"jobfleet-worker-node: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    run()
