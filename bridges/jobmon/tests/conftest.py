"""A stdlib stand-in for the routes of Jobmon's server that Jobmon's worker node calls.

The real server (jobmon_server) has no release matching jobmon_core 3.4.8 on the package
index; the worker's side of the protocol is small, and this serves it from memory:

    GET  /cluster/<name>                                   the cluster row (type, JSON)
    GET  /get_array_task_instance_id/<array>/<batch>/<step>
    POST /task_instance/<id>/log_running                   -> the command to run
    POST /task_instance/<id>/log_report_by
    POST /task_instance/<id>/log_done
    POST /task_instance/<id>/log_error_worker_node

Every call is recorded, so a test reads what Jobmon's server would have been told.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest


@dataclass
class StandIn:
    url: str = ""
    clusters: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    arrays: dict[tuple[int, int, int], int] = field(default_factory=dict)
    calls: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_task(self, task_instance_id: int, command: str, stdout_dir: str | None = None) -> None:
        self.tasks[task_instance_id] = {"command": command, "dir": stdout_dir}

    def statuses(self, task_instance_id: int) -> list[str]:
        with self.lock:
            return [route for ti, route, _ in self.calls if ti == task_instance_id]

    def message(self, task_instance_id: int, route: str) -> dict[str, Any]:
        with self.lock:
            return next(m for ti, r, m in self.calls if ti == task_instance_id and r == route)

    def ended(self, task_instance_id: int) -> str | None:
        """D, or the error state the worker reported, once it has."""
        for route in self.statuses(task_instance_id):
            if route == "log_done":
                return "D"
            if route == "log_error_worker_node":
                return str(self.message(task_instance_id, route)["error_state"])
        return None


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _answer(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if found := re.fullmatch(r"/cluster/([^/]+)", path):
                name = found[1]
                if name not in state.clusters:
                    return self._answer({"error": "no such cluster"}, 404)
                cluster_type, parameters = state.clusters[name]
                return self._answer({"cluster": [1, name, cluster_type, json.dumps(parameters)]})
            if found := re.fullmatch(r"/get_array_task_instance_id/(\d+)/(\d+)/(\d+)", path):
                key = (int(found[1]), int(found[2]), int(found[3]))
                return self._answer({"task_instance_id": state.arrays[key]})
            return self._answer({"error": path}, 404)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length", 0))
            message = json.loads(self.rfile.read(length) or b"{}")
            found = re.fullmatch(r"/task_instance/(\d+)/(\w+)", path)
            if not found:
                return self._answer({"error": path}, 404)
            ti, route = int(found[1]), found[2]
            with state.lock:
                state.calls.append((ti, route, message))
            if route == "log_running":
                task = state.tasks[ti]
                wire = [ti, "R", 1, ti, f"task-{ti}", task["command"], 1, task["dir"], task["dir"]]
                return self._answer({"task_instance": wire})
            if route in ("log_report_by",):
                return self._answer({"status": "R"})
            if route == "log_done":
                return self._answer({"status": "D"})
            if route == "log_error_worker_node":
                return self._answer({"status": message["error_state"]})
            return self._answer({"error": route}, 404)

    return Handler


@pytest.fixture
def jobmon_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """The stand-in, running, with Jobmon's configuration pointing at it (by environment)."""
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("JOBMON__HTTP__SERVICE_URL", state.url)
    monkeypatch.setenv("JOBMON__HTTP__ROUTE_PREFIX", "")
    monkeypatch.setenv("JOBMON__HTTP__RETRIES_TIMEOUT", "10")
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
