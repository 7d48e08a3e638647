"""A tiny pymesos executor for the emulator's tests (started by the emulated agent).

Each task's `data` is a base64-encoded shell command: TASK_RUNNING, run it (in this executor's
process group), then TASK_FINISHED (exit 0), TASK_KILLED (after a KILL) or TASK_FAILED, with the
exit code in `data`. Framework messages are echoed back with an "echo:" prefix.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data


class TestExecutor(Executor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()
        self.lock = threading.Lock()

    def launchTask(self, driver: Any, task: Any) -> None:
        threading.Thread(target=self._run, args=(driver, task), daemon=True).start()

    def _run(self, driver: Any, task: Any) -> None:
        tid = task.task_id.value
        driver.sendStatusUpdate({"task_id": {"value": tid}, "state": "TASK_RUNNING"})
        command = decode_data(task.data).decode() if task.data else "true"
        with self.lock:
            proc = subprocess.Popen(["/bin/sh", "-c", command])
            self.procs[tid] = proc
        code = proc.wait()
        with self.lock:
            killed = tid in self.killed
        state = "TASK_FINISHED" if code == 0 else "TASK_KILLED" if killed else "TASK_FAILED"
        driver.sendStatusUpdate(
            {
                "task_id": {"value": tid},
                "state": state,
                "data": encode_data(str(code).encode()),
                "message": f"exit {code}",
            }
        )

    def killTask(self, driver: Any, task_id: Any) -> None:
        with self.lock:
            self.killed.add(task_id.value)
            proc = self.procs.get(task_id.value)
        if proc is not None:
            proc.kill()

    def frameworkMessage(self, driver: Any, message: Any) -> None:
        driver.sendFrameworkMessage(encode_data(b"echo:" + decode_data(message)))

    def shutdown(self, driver: Any) -> None:
        with self.lock:
            for proc in self.procs.values():
                proc.kill()


if __name__ == "__main__":
    executor_driver = MesosExecutorDriver(TestExecutor(), use_addict=True)
    executor_driver.run()
    sys.exit(0)
