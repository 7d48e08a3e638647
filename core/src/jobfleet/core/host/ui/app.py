"""The UI's Starlette application: routes, the per-run cache, and the templates.

Pages are rendered on the server with Jinja2, autoescaping on: every value from the ledger
(task names, messages, log lines) is escaped wherever a template shows it, without a call to
forget. Endpoints are plain functions, which Starlette runs in its thread pool: several users
at once, each request in a read session of its own (on SQLite a reader never blocks the
service writing the run, nor is blocked by it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobfleet.core.host.ledger.states import FINAL_RUN_STATUSES, InstanceState
from jobfleet.core.host.rows import NotFoundError
from jobfleet.core.host.ui import data, plots
from jobfleet.core.host.ui.security import Guard
from jobfleet.core.resources import format_memory, format_runtime

if TYPE_CHECKING:
    from jobfleet.core.host.ledger import Ledger

HERE: Final = Path(__file__).parent
# How long the heavy part of a running run's page (plots, rankings, failures) is reused
# between requests: every user's poll shares one reading of the run.
LIVE_CACHE_SECONDS: Final = 3.0
CACHED_RUNS: Final = 32
# How often the pages of running runs ask for their news (milliseconds, read by live.js).
POLL_MILLISECONDS: Final = 2000
MAX_PAGE: Final = 1_000_000
MAX_PER_PAGE: Final = 500
MAX_FILTER: Final = 200


class _RunCache:
    """The heavy sections of run pages: kept for good once a run is over, briefly while not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[float, bool, dict[str, Any]]] = OrderedDict()

    def get(self, run_id: int, final: bool, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            entry = self._entries.get(run_id)
            if entry is not None:
                built_at, was_final, value = entry
                if was_final or (not final and time.monotonic() - built_at < LIVE_CACHE_SECONDS):
                    self._entries.move_to_end(run_id)
                    return value
        value = build()
        with self._lock:
            self._entries[run_id] = (time.monotonic(), final, value)
            while len(self._entries) > CACHED_RUNS:
                self._entries.popitem(last=False)
        return value


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        memory=lambda value: "-" if value is None else format_memory(int(value)),
        seconds=_seconds,
        moment=lambda value: "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}",
        state_name=_state_name,
        percent=lambda part, whole: f"{100 * part / whole:.0f}%" if whole else "-",
        number=lambda value: "-" if value is None else f"{value:,}",
    )
    return environment


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else format_runtime(round(value))


def _state_name(letter: str | None) -> str:
    try:
        return InstanceState(letter).name if letter else "-"
    except ValueError:
        return "?"


def create_app(ledger: Ledger, *, token: str | None = None, loopback_only: bool = True) -> Any:
    """The ASGI application showing `ledger` (opened read-only by the caller).

    `token`: every request must carry it (a query parameter once, which sets a cookie; or a
    bearer header). `loopback_only`: requests must name a loopback host (DNS rebinding).
    """
    environment = _environment()
    cache = _RunCache()

    def page(request: Request, template: str, live: bool, http_status: int = 200,
             **context: Any) -> HTMLResponse:  # fmt: skip
        html = environment.get_template(template).render(
            request=request,
            ledger=ledger.safe_url,
            live=live,
            poll=POLL_MILLISECONDS,
            now=datetime.now(UTC),
            url=lambda name, **params: request.url_for(name, **params).path,
            query=_query,
            **context,
        )  # fmt: skip
        return HTMLResponse(html, status_code=http_status)

    def runs_page(request: Request) -> Response:
        status = _choice(request, "status", data.RUN_STATUSES)
        name = _text(request, "name")
        with ledger.read_session() as session:
            summaries = data.run_list(session, status=status, name=name)
        live = any(summary.status not in FINAL_RUN_STATUSES for summary in summaries)
        return page(request, "runs.html", live, runs=summaries, status=status, name=name,
                    statuses=data.RUN_STATUSES)  # fmt: skip

    def run_page(request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        with ledger.read_session() as session:
            from jobfleet.core.host import queries

            run = data.find_run(session, run_id)
            summary = queries.run_summary(session, run)
            states = queries.state_counts(session, run_id)
            final = summary.status in FINAL_RUN_STATUSES
            heavy = cache.get(run_id, final, lambda: _heavy(session, run_id))
        return page(request, "run.html", not final, run=summary, states=states,
                    total_instances=sum(states.values()), **heavy)  # fmt: skip

    def tasks_page(request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        query = data.TaskQuery(
            state=_choice(request, "state", data.TASK_STATES),
            name=_text(request, "name"),
            sort=_choice(request, "sort", data.TASK_SORTS) or "id",
            descending=(_choice(request, "order", ("asc", "desc")) or "asc") == "desc",
            page=_whole(request, "page", 1, MAX_PAGE),
            per_page=_whole(request, "per_page", data.TASKS_PAGE, MAX_PER_PAGE),
        )
        with ledger.read_session() as session:
            from jobfleet.core.host import queries

            summary = queries.run_summary(session, data.find_run(session, run_id))
            result = data.task_page(session, run_id, query)
        return page(request, "tasks.html", summary.status not in FINAL_RUN_STATUSES,
                    run=summary, result=result, q=query, states=data.TASK_STATES,
                    sorts=data.TASK_SORTS)  # fmt: skip

    def task_page(request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        task_id = int(request.path_params["task_id"])
        with ledger.read_session() as session:
            from jobfleet.core.host import queries

            summary = queries.run_summary(session, data.find_run(session, run_id))
            task, attempts = data.task_detail(session, run_id, task_id)
            live = summary.status not in FINAL_RUN_STATUSES and task.state == "pending"
            return page(request, "task.html", live, run=summary, task=task, attempts=attempts)

    def log_file(request: Request) -> Response:
        instance_id = int(request.path_params["instance_id"])
        stream = request.path_params["stream"]
        if stream not in ("stdout", "stderr"):
            raise HTTPException(404, "The log is stdout or stderr.")
        with ledger.read_session() as session:
            from jobfleet.core.host import queries

            instance = queries.find_instance(session, instance_id)
            recorded = instance.stdout_path if stream == "stdout" else instance.stderr_path
            work_dir = queries.run_work_dir(session, instance.run_id)
        path = data.log_path(recorded, work_dir)
        if path is None or not path.is_file():
            raise HTTPException(404, f"Task instance {instance_id} has no {stream} file here.")
        # As text, never as HTML: a log may hold markup (and `nosniff` is set on every answer).
        return FileResponse(path, media_type="text/plain; charset=utf-8",
                            content_disposition_type="inline")  # fmt: skip

    def not_found(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", False, http_status=404, message=str(exc))

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return page(request, "error.html", False, http_status=exc.status_code, message=exc.detail)

    app = Starlette(
        routes=[
            Route("/", runs_page, name="runs"),
            Route("/runs/{run_id:int}", run_page, name="run"),
            Route("/runs/{run_id:int}/tasks", tasks_page, name="tasks"),
            Route("/runs/{run_id:int}/tasks/{task_id:int}", task_page, name="task"),
            Route("/instances/{instance_id:int}/{stream:str}", log_file, name="log"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={NotFoundError: not_found, HTTPException: http_error},
    )
    return Guard(app, token=token, loopback_only=loopback_only)


def _heavy(session: Any, run_id: int) -> dict[str, Any]:
    """The sections of a run page that read more than a few rows: drawn once per cache entry."""
    from jobfleet.core.host.ledger.models import TaskInstance

    sample = data.sample_instances(session, run_id)
    colours = plots.pattern_colours(sample.instances)
    timeline, _ = plots.timeline(sample.instances, sample.total, datetime.now(UTC))
    adjustments, adjustments_total = data.adjustments(session, run_id)
    return {
        "bands": plots.BANDS,
        "sample_size": len(sample.instances),
        "sample_exact": sample.exact,
        "timeline": timeline,
        "memory_plot": plots.memory_scatter(sample.instances, colours),
        "runtime_plot": plots.runtime_scatter(sample.instances, colours),
        "cpu_plot": plots.cpu_efficiency(sample.instances),
        "patterns": plots.pattern_usage(sample.instances, colours),
        "failures": data.failures(session, run_id),
        "examined_per_state": data.FAILURES_EXAMINED,
        "slowest": data.ranked(session, run_id, TaskInstance.wallclock),
        "hungriest": data.ranked(session, run_id, TaskInstance.maxrss),
        "adjustments": adjustments,
        "adjustments_total": adjustments_total,
        "retries": data.retries(session, run_id),
    }


def _query(**params: Any) -> str:
    """A link's query string: the parameters that have a value."""
    return urlencode({key: value for key, value in params.items() if value not in (None, "")})


def _choice(request: Request, field: str, accepted: tuple[str, ...]) -> str | None:
    value = request.query_params.get(field)
    if value in (None, ""):
        return None
    if value not in accepted:
        raise HTTPException(400, f"{field} must be one of: {', '.join(accepted)}.")
    return value


def _text(request: Request, field: str) -> str | None:
    value = request.query_params.get(field)
    if value is not None and len(value) > MAX_FILTER:
        raise HTTPException(400, f"{field} must be at most {MAX_FILTER} characters.")
    return value or None


def _whole(request: Request, field: str, default: int, most: int) -> int:
    value = request.query_params.get(field) or str(default)
    if not (value.isascii() and value.isdigit() and len(value) <= 8 and 1 <= int(value) <= most):
        raise HTTPException(400, f"{field} must be a whole number from 1 to {most:,}.")
    return int(value)
