"""jobfleet's Mesos executor (`jobfleet-mesos-executor`): one per agent and framework.

The agent starts it from the framework's `ExecutorInfo`; pymesos' executor driver subscribes to
the agent's executor API. For each LAUNCH it starts the task's `jobfleet-worker-node` wrapper —
the argv from the task's `data`, never through a shell — in a session of its own, with the run's
channel token in its environment (from the task's `data` too: never on a command line, never in
the `ExecutorInfo`, whose command and environment the master shows to anyone who can read its
state). It sends `TASK_RUNNING`; when the wrapper ends, a terminal update (`TASK_FINISHED` for
exit status 0, else `TASK_FAILED`) whose `data` carries the wrapper's final record, read from
the termination log the wrapper writes in the sandbox (`$JOBFLEET_TERMINATION_LOG`), and its
exit status (see exits.py for how the host reads it).

KILL: SIGTERM to the wrapper's process group (the wrapper stops its task with its own kill
grace), SIGKILL after the task's kill grace and a margin, then `TASK_KILLED`. SHUTDOWN (the
framework is torn down, or the agent shuts the executor down) and a lost agent connection kill
every task so, before the executor exits; those updates carry `"shutdown": true` in their
`data`, so that the host tells them from a KILL (U rather than F when it had not asked).
Every `node_report_interval` seconds, a framework message tells the scheduler its agent's
cores, memory and load (`get_nodes`).

pymesos' driver `killpg(0, SIGKILL)`s its own process group after a shutdown grace (unless
`MESOS_LOCAL` is set): the wrappers are in their own sessions, so that kill can only reach the
executor, and it is put off until this executor has stopped them itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobfleet.core.wrapper import (
    CHANNEL_TOKEN_VARIABLE,
    TERMINATION_LOG_LIMIT,
    TERMINATION_LOG_STARTED,
    TERMINATION_LOG_VARIABLE,
    without_host_variables,
)
from jobfleet.plugins.mesos.worker_node import STEP_VARIABLE, TASK_VARIABLE

log = logging.getLogger("jobfleet.mesos.executor")

REPORT_INTERVAL_VARIABLE = "JOBFLEET_MESOS_NODE_REPORT_INTERVAL"
"""Set in the ExecutorInfo's environment (not a secret): seconds between node reports."""

_KILL_MARGIN = 5.0  # seconds the wrapper gets beyond its kill grace to report, before SIGKILL


@dataclass
class _Running:
    task_id: str
    process: subprocess.Popen[bytes]
    exit_log: Path
    kill_grace: float
    killed: bool = False
    shutdown: bool = False  # killed because the executor was shut down, not by a KILL
    done: threading.Event = field(default_factory=threading.Event)


def encode(payload: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


class JobfleetExecutor:
    """The pymesos `Executor` callbacks (duck-typed: pymesos calls them by name)."""

    def __init__(self, sandbox: Path) -> None:
        self.sandbox = sandbox
        self.tasks: dict[str, _Running] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.hostname = socket.getfqdn()

    # -- pymesos callbacks --------------------------------------------------------------------

    def registered(
        self, driver: Any, executor_info: Any, framework_info: Any, agent_info: Any
    ) -> None:
        self.hostname = str(agent_info.get("hostname") or self.hostname)
        interval = float(os.environ.get(REPORT_INTERVAL_VARIABLE) or 30.0)
        threading.Thread(
            target=self._report_node, args=(driver, interval), name="node-report", daemon=True
        ).start()

    def reregistered(self, driver: Any, agent_info: Any) -> None:
        pass

    def disconnected(self, driver: Any) -> None:
        pass

    def launchTask(self, driver: Any, task: Any) -> None:
        task_id = str(task["task_id"]["value"])
        try:
            spec = json.loads(base64.b64decode(task.get("data") or ""))
            argv = [str(word) for word in spec["argv"]]
            if not argv:
                raise ValueError("an empty argv")
        except (ValueError, KeyError, TypeError) as exc:
            self._update(driver, task_id, "TASK_FAILED", f"bad task data: {exc}", None)
            return
        exit_log = self.sandbox / f"{_safe(task_id)}.exit"
        env = without_host_variables(os.environ)
        env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
        env[TASK_VARIABLE] = task_id
        env.pop(STEP_VARIABLE, None)
        if spec.get("step") is not None:
            env[STEP_VARIABLE] = str(int(spec["step"]))
        if spec.get("token"):
            env[CHANNEL_TOKEN_VARIABLE] = str(spec["token"])
        env[TERMINATION_LOG_VARIABLE] = str(exit_log)
        output = self.sandbox / f"{_safe(task_id)}.wrapper.log"
        try:
            with open(output, "ab") as sink:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=self.sandbox,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            payload = {"record": None, "returncode": 127, "started": False}
            self._update(
                driver, task_id, "TASK_FAILED", f"the wrapper did not start: {exc}", payload
            )
            return
        running = _Running(task_id, process, exit_log, float(spec.get("kill_grace") or 10.0))
        with self.lock:
            self.tasks[task_id] = running
        self._update(driver, task_id, "TASK_RUNNING", f"wrapper pid {process.pid}", None)
        threading.Thread(
            target=self._watch, args=(driver, running), name=f"watch-{task_id}", daemon=True
        ).start()

    def killTask(self, driver: Any, task_id: Any) -> None:
        with self.lock:
            running = self.tasks.get(str(task_id.get("value")))
        if running is None:
            return  # ended already: its terminal update is on its way
        self._kill(running)

    def frameworkMessage(self, driver: Any, message: Any) -> None:
        pass

    def shutdown(self, driver: Any) -> None:
        """Kill every task (SIGTERM, SIGKILL after its grace), report them, and stop."""
        with self.lock:
            running = list(self.tasks.values())
        for task in running:
            task.shutdown = True
            self._kill(task, wait=False)
        deadline = time.monotonic() + max([t.kill_grace for t in running] or [0]) + _KILL_MARGIN
        for task in running:
            task.done.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        self.stopped.set()

    def error(self, driver: Any, message: str) -> None:
        log.error("the agent reported an error: %s", message)

    # -- tasks --------------------------------------------------------------------------------

    def _kill(self, running: _Running, *, wait: bool = False) -> None:
        running.killed = True
        _signal_group(running.process.pid, signal.SIGTERM)

        def hard_kill() -> None:
            if not running.done.wait(timeout=running.kill_grace + _KILL_MARGIN):
                _signal_group(running.process.pid, signal.SIGKILL)

        thread = threading.Thread(target=hard_kill, name=f"kill-{running.task_id}", daemon=True)
        thread.start()
        if wait:
            thread.join()

    def _watch(self, driver: Any, running: _Running) -> None:
        returncode = running.process.wait()
        # Whatever is left of the wrapper's group (its task has a session of its own, which
        # the wrapper stops itself).
        _signal_group(running.process.pid, signal.SIGKILL)
        text = _read_log(running.exit_log)
        record: dict[str, Any] | None = None
        if text and text.strip() != TERMINATION_LOG_STARTED:
            try:
                loaded = json.loads(text)
                record = loaded if isinstance(loaded, dict) else None
            except ValueError:
                record = None
        started = text is not None and text.strip() == TERMINATION_LOG_STARTED
        status = returncode if returncode >= 0 else 128 - returncode
        payload: dict[str, Any] = {"record": record, "returncode": returncode, "started": started}
        if running.shutdown:
            payload["shutdown"] = True
            state, message = "TASK_KILLED", "killed: the executor was shut down"
        elif running.killed:
            state, message = "TASK_KILLED", "killed on the framework's request"
        elif returncode == 0:
            state, message = "TASK_FINISHED", "the wrapper exited with status 0"
        else:
            state, message = "TASK_FAILED", f"the wrapper exited with status {status}"
        if record is not None and isinstance(record.get("message"), str) and record["message"]:
            message = f"{message}: {record['message'][:500]}"
        with self.lock:
            self.tasks.pop(running.task_id, None)
        running.exit_log.unlink(missing_ok=True)
        self._update(driver, running.task_id, state, message, payload)
        running.done.set()

    def _update(
        self,
        driver: Any,
        task_id: str,
        state: str,
        message: str,
        payload: dict[str, Any] | None,
    ) -> None:
        status: dict[str, Any] = {"task_id": {"value": task_id}, "state": state, "message": message}
        if payload is not None:
            status["data"] = encode(payload)
        try:
            driver.sendStatusUpdate(status)
        except Exception as exc:  # the agent is gone: it reports the task itself
            log.warning("the update %s of %s was not sent: %s", state, task_id, _first_line(exc))

    def _report_node(self, driver: Any, interval: float) -> None:
        while not self.stopped.is_set():
            try:
                driver.sendFrameworkMessage(encode({"node": self.node_report()}))
            except Exception as exc:
                log.debug("the node report was not sent: %s", _first_line(exc))
            self.stopped.wait(interval)

    def node_report(self) -> dict[str, Any]:
        memory_total, memory_available = _meminfo()
        with self.lock:
            workers = len(self.tasks)
        return {
            "hostname": self.hostname,
            "cores_total": float(os.cpu_count() or 1),
            "cores_used": min(float(os.cpu_count() or 1), os.getloadavg()[0]),
            "memory_total": memory_total,
            "memory_used": max(0, memory_total - memory_available),
            "workers": workers,
        }


def _safe(task_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id)[:200]


def _signal_group(pgid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, number)


def _read_log(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(TERMINATION_LOG_LIMIT).decode("utf-8", errors="replace")
    except OSError:
        return None


def _meminfo() -> tuple[int, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:300]


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s jobfleet-mesos-executor %(levelname)s %(message)s"
    )
    from pymesos import MesosExecutorDriver

    sandbox = Path(os.environ.get("MESOS_SANDBOX") or os.environ.get("MESOS_DIRECTORY") or ".")
    executor = JobfleetExecutor(sandbox.resolve())

    class Driver(MesosExecutorDriver):  # type: ignore[misc]
        def _delay_kill(self) -> None:
            # pymesos' last resort (killpg of the executor's own group) only once this executor
            # had the time to stop its wrappers itself.
            def last_resort() -> None:
                executor.stopped.wait(timeout=max(self.grace_shutdown_period, 120.0))
                time.sleep(max(self.grace_shutdown_period, 1.0))
                os.killpg(0, signal.SIGKILL)

            threading.Thread(target=last_resort, daemon=True).start()

    driver = Driver(executor, use_addict=False)
    driver.start()
    driver.join()
    executor.shutdown(driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
