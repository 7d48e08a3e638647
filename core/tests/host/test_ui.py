"""`jobfleet ui`: its HTTP layer in process (a real uvicorn in a thread, on SQLite and
PostgreSQL), and its pages in a real headless Chromium driven over WebDriver.

The browser tests save a screenshot of the page under `test-artifacts/ui/` when they fail, and
one of them writes the README's screenshot, docs/images/ui-run.png, from the hello example.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobfleet.core.exit_info import ExitReason, ExitRecord
from jobfleet.core.host.ledger import (
    Cluster,
    Ledger,
    Run,
    Task,
    TaskInstance,
    add_instance,
    record_event,
    transition,
    utcnow,
)
from jobfleet.core.host.ui import UiServer
from jobfleet.core.host.ui.security import COOKIE
from jobfleet.core.resources import MIB
from jobfleet.core.testing.host import wait_for
from jobfleet.core.testing.webdriver import Browser, find_browser

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
HOSTILE = "<script>window.pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.pwned=2"> [/] [bold]x[/bold]'
PATHS = {"Q": "", "R": "IOR", "D": "IORD", "E": "IORE", "Z": "IORZ"}


# --- a ledger with a finished run and a running one -----------------------------------------


@dataclass
class Built:
    url: str
    done: int
    live: int
    live_instance: int
    live_task: int
    memory_points: int
    hostile_task: int
    log_instance: int


def _attempt(session: Session, task: Task, to: str, memory: str, **values: Any) -> TaskInstance:
    instance = add_instance(session, task, {"memory": memory, "cores": 1, "runtime": 600})
    for letter in PATHS[to]:
        transition(session, instance, letter, f"to {letter}")
    for key, value in values.items():
        setattr(instance, key, value)
    session.flush()
    return instance


def _task(session: Session, run: Run, name: str, state: str) -> Task:
    task = Task(run_id=run.id, name=name, command=f"echo {name!r}", resources={"memory": "100M"},
                max_attempts=3, state=state)  # fmt: skip
    session.add(task)
    session.flush()
    return task


def build(url: str, logs: Path) -> Built:
    logs.mkdir(parents=True, exist_ok=True)
    stdout = logs / "out.txt"
    stdout.write_text("".join(f"line {n}\n" for n in range(100)) + "<b>not bold</b>\n")
    now = utcnow()
    alive = f"{socket.gethostname()}:{os.getpid()}:ui-test"
    with Ledger.open(url) as ledger, ledger.session() as session:
        cluster = Cluster(name="local", cluster_type="dummy")
        session.add(cluster)
        session.flush()
        done = Run(
            name="nightly",
            cluster_id=cluster.id,
            status="done",
            created_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=1),
        )
        live = Run(name=f"live {HOSTILE_IMG}", cluster_id=cluster.id, status="running",
                   created_at=now - timedelta(minutes=5), owner_token=alive,
                   lease_expires_at=now + timedelta(hours=1))  # fmt: skip
        session.add_all([done, live])
        session.flush()
        ok = ExitRecord(ExitReason.COMPLETED, exit_code=0).to_dict()
        for n in range(1, 4):
            task = _task(session, done, f"align-{n}", "done")
            _attempt(session, task, "D", "100M", maxrss=n * 20 * MIB, wallclock=10.0 * n,
                     cpu=5.0 * n, exit_record=ok, stdout_path=str(stdout))  # fmt: skip
        hostile = _task(session, done, HOSTILE, "done")
        failed = ExitRecord(ExitReason.FAILED, exit_code=3, message="exit 3: <no such file>")
        _attempt(session, hostile, "E", "100M", maxrss=5 * MIB, wallclock=1.0, cpu=0.5,
                 exit_record=failed.to_dict())  # fmt: skip
        logged = _attempt(session, hostile, "D", "100M", maxrss=6 * MIB, wallclock=2.0, cpu=1.0,
                          exit_record=ok, stdout_path=str(stdout))  # fmt: skip
        hungry = _task(session, done, "sort-[/]-1", "done")
        oom = ExitRecord(ExitReason.OOM, signal=9, message="killed: out of memory")
        _attempt(session, hungry, "Z", "100M", maxrss=100 * MIB, wallclock=3.0,
                 exit_record=oom.to_dict())  # fmt: skip
        record_event(session, done.id, "adjustment", "memory scaled from 100M to 150M",
                     details={"from": {"memory": "100M"}, "to": {"memory": "150M"}})  # fmt: skip
        _attempt(session, hungry, "D", "150M", maxrss=130 * MIB, wallclock=4.0, cpu=3.0,
                 exit_record=ok)  # fmt: skip
        running = _task(session, live, "still-running", "pending")
        live_instance = _attempt(session, running, "R", "100M")
        queued = _task(session, live, "queued", "pending")
        _attempt(session, queued, "Q", "100M")
        return Built(url=url, done=done.id, live=live.id, live_instance=live_instance.id,
                     live_task=running.id, memory_points=7, hostile_task=hostile.id,
                     log_instance=logged.id)  # fmt: skip


def finish_live_task(built: Built, *, end_run: bool) -> None:
    """What the service writes when the live run's running task ends done (and the run)."""
    with Ledger.open(built.url) as ledger, ledger.session() as session:
        instance = session.get(TaskInstance, built.live_instance)
        assert instance is not None
        if instance.state != "D":
            transition(session, instance, "D", "done")
            instance.maxrss, instance.wallclock, instance.cpu = 42 * MIB, 3.0, 2.0
            task = session.get(Task, built.live_task)
            assert task is not None
            task.state = "done"
        if end_run:
            for other in session.scalars(select(TaskInstance).where(
                    TaskInstance.run_id == built.live, TaskInstance.state == "Q")):  # fmt: skip
                transition(session, other, "K", "killed")
            for task in session.scalars(select(Task).where(Task.run_id == built.live,
                                                           Task.state == "pending")):  # fmt: skip
                task.state = "killed"
            run = session.get(Run, built.live)
            assert run is not None
            run.status, run.finished_at, run.owner_token = "killed", utcnow(), None


@contextmanager
def serving(url: str, **options: Any) -> Iterator[tuple[UiServer, str]]:
    ledger = Ledger.open(url, read_only=True)
    server = UiServer(ledger, bind=options.pop("bind", "127.0.0.1:0"), **options).start()
    try:
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        ledger.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (the test's)
    try:
        with opener.open(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def built(ledger_url: str, tmp_path: Path) -> Built:
    return build(ledger_url, tmp_path / "logs")


@pytest.fixture
def sqlite_built(tmp_path: Path) -> Built:
    return build(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "logs")


# --- the HTTP layer -------------------------------------------------------------------------


def test_runs_page_lists_runs_with_progress_and_owner_and_filters(built: Built) -> None:
    with serving(built.url) as (_, base):
        status, headers, html = fetch(base + "/")
        assert status == 200
        assert html.count('class="run-row') == 2
        assert 'data-live="1"' in html  # a running run is listed: the page keeps itself fresh
        assert '<span class="owner alive"' in html
        assert html.count("<progress") == 2
        _, _, running = fetch(base + "/?status=running")
        assert running.count('class="run-row') == 1
        assert "nightly" not in running
        _, _, named = fetch(base + "/?name=night")
        assert named.count('class="run-row') == 1
        assert 'data-live="0"' in named
        # A LIKE wildcard in the filter is a literal: no run's name holds "%".
        _, _, wild = fetch(base + "/?name=%25")
        assert wild.count('class="run-row') == 0
        bad, _, message = fetch(base + "/?status=sleeping")
        assert bad == 400
        assert "status must be one of: created, running, done" in message
        # Nothing from elsewhere, and no inline script: the policy says so to the browser.
        assert "default-src 'none'" in headers["content-security-policy"]
        assert re.search(r"<script>(?!window)", html) is None


def test_every_user_string_is_escaped(built: Built) -> None:
    with serving(built.url) as (_, base):
        pages = [
            fetch(base + "/")[2],
            fetch(f"{base}/runs/{built.done}")[2],
            fetch(f"{base}/runs/{built.live}")[2],
            fetch(f"{base}/runs/{built.done}/tasks")[2],
            fetch(f"{base}/runs/{built.done}/tasks/{built.hostile_task}")[2],
        ]
    for html in pages:
        assert HOSTILE not in html
        assert "<img src=x onerror" not in html
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in pages[3]
    assert "[/] [bold]x[/bold]" in pages[0]  # brackets are not markup here either
    assert "&lt;b&gt;not bold&lt;/b&gt;" in pages[4]  # a log line, in the task page's tail
    assert "exit 3: &lt;no such file&gt;" in pages[1]


def test_run_page_shows_timeline_plots_failures_rankings_and_adjustments(built: Built) -> None:
    with serving(built.url) as (_, base):
        status, _, html = fetch(f"{base}/runs/{built.done}")
    assert status == 200
    memory = re.search(r'<svg id="plot-memory".*?</svg>', html, re.S)
    assert memory is not None
    assert memory.group(0).count('<circle class="point"') == built.memory_points
    runtime = re.search(r'<svg id="plot-runtime".*?</svg>', html, re.S)
    assert runtime is not None
    assert runtime.group(0).count('<circle class="point"') == 7
    assert html.count('class="band band-') == 4
    assert 'id="plot-cpu"' in html
    assert '<rect class="bar"' in html
    assert "Drawn from all 7 attempts." in html
    assert re.search(r'<b class="reason">oom</b>: 1 attempt<', html)
    assert re.search(r'<b class="reason">failed</b>: 1 attempt<', html)
    assert "killed: out of memory" in html
    assert "Resource adjustments (1)" in html
    assert "memory scaled from 100M to 150M" in html
    # Slowest first: align-3 ran 30 s.
    slowest = html.split("<h2>Slowest attempts</h2>")[1].split("</table>")[0]
    assert slowest.index("align-3") < slowest.index("align-2") < slowest.index("align-1")
    # Right-sizing by kind of task: align-# peaked at 60M.
    assert re.search(r"align-#</td>\s*<td>3</td>", html)
    assert 'data-live="0"' in html


def test_tasks_page_is_filtered_sorted_and_paginated_in_the_database(built: Built) -> None:
    with serving(built.url) as (_, base):
        _, _, first = fetch(f"{base}/runs/{built.done}/tasks?per_page=2")
        assert first.count('class="task-row') == 2
        assert "page 1 of 3 (5 tasks)" in first
        assert 'rel="next"' in first
        assert 'href="?page=2&amp;sort=id&amp;per_page=2"' in first
        _, _, last = fetch(f"{base}/runs/{built.done}/tasks?page=3&per_page=2")
        assert last.count('class="task-row') == 1
        assert 'rel="next"' not in last
        sorted_by = "sort=maxrss&order=desc&per_page=2"
        _, _, hungry = fetch(f"{base}/runs/{built.done}/tasks?{sorted_by}")
        names = re.findall(r'<td class="name">([^<]*)</td>', hungry)
        assert names == ["sort-[/]-1", "align-3"]
        _, _, named = fetch(
            f"{base}/runs/{built.done}/tasks?name=align&sort=name&order=desc&per_page=2"
        )
        assert re.findall(r'<td class="name">([^<]*)</td>', named) == ["align-3", "align-2"]
        _, _, pending = fetch(f"{base}/runs/{built.live}/tasks?state=pending")
        assert "page 1 of 1 (2 tasks)" in pending
        bad, _, message = fetch(f"{base}/runs/{built.done}/tasks?sort=rowid")
        assert bad == 400
        assert "sort must be one of: id, name" in message
        bad, _, message = fetch(f"{base}/runs/{built.done}/tasks?page=0")
        assert bad == 400
        assert "page must be a whole number" in message


def test_task_page_shows_attempts_events_tails_and_the_full_log(built: Built) -> None:
    with serving(built.url) as (_, base):
        status, _, html = fetch(f"{base}/runs/{built.done}/tasks/{built.hostile_task}")
        assert status == 200
        assert html.count('<article class="attempt"') == 2
        assert "line 99" in html
        assert "line 50" not in html
        assert "E→" not in html
        assert "R→E" in html
        link = f"/instances/{built.log_instance}/stdout"
        assert f'href="{link}"' in html
        status, headers, log = fetch(base + link)
        assert status == 200
        assert log.startswith("line 0\n")
        assert "<b>not bold</b>" in log
        assert headers["content-type"].startswith("text/plain")
        assert headers["x-content-type-options"] == "nosniff"
        missing, _, _ = fetch(f"{base}/instances/{built.live_instance}/stdout")
        assert missing == 404
        other, _, message = fetch(f"{base}/runs/{built.live}/tasks/{built.hostile_task}")
        assert other == 404
        assert f"Run {built.live} has no task {built.hostile_task}" in message


def test_the_ledgers_password_never_reaches_a_page(built: Built) -> None:
    secret = "s3cret-pw"  # noqa: S105 (conftest.PG_PASSWORD)
    with serving(built.url) as (_, base):
        for path in ("/", f"/runs/{built.done}", f"/runs/{built.done}/tasks", "/runs/999"):
            _, _, html = fetch(base + path)
            assert secret not in html
            if built.url.startswith("postgresql"):
                assert "postgres:***@127.0.0.1" in html


def test_a_live_page_shows_a_task_finishing_and_the_run_ending(built: Built) -> None:
    with serving(built.url) as (_, base):
        _, _, before = fetch(f"{base}/runs/{built.live}")
        assert 'data-live="1"' in before
        assert '<span class="count-done">0 done' in before
        finish_live_task(built, end_run=False)
        _, _, after = fetch(f"{base}/runs/{built.live}")
        assert '<span class="count-done">1 done' in after
        finish_live_task(built, end_run=True)
        _, _, ended = fetch(f"{base}/runs/{built.live}")
        assert 'data-live="0"' in ended
        assert 'class="status status-killed"' in ended


def test_several_users_read_while_the_run_is_being_written(built: Built) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    written = []

    def writer() -> None:
        # What a service does to a running run: new tasks and attempts, one commit each.
        with Ledger.open(built.url) as ledger:
            while not written or (not stop.is_set() and len(written) < 200):
                with ledger.session() as session:
                    run = session.get(Run, built.live)
                    assert run is not None
                    task = _task(session, run, f"added-{len(written)}", "pending")
                    written.append(_attempt(session, task, "R", "100M").id)

    paths = ["/", f"/runs/{built.live}", f"/runs/{built.live}/tasks?sort=name",
             f"/runs/{built.live}/tasks?page=2&per_page=5"]  # fmt: skip
    with serving(built.url) as (_, base), ThreadPoolExecutor(5) as pool:
        writing = pool.submit(writer)
        try:
            answers = list(pool.map(lambda n: fetch(base + paths[n % 4])[0], range(40)))
        finally:
            stop.set()
        writing.result()
        assert answers == [200] * 40
        _, _, html = fetch(f"{base}/runs/{built.live}/tasks?per_page=500")
        assert html.count('class="task-row') == 2 + len(written)


def test_off_loopback_a_token_is_needed_and_becomes_a_cookie(sqlite_built: Built) -> None:
    with serving(sqlite_built.url, token="t0ken") as (server, base):  # noqa: S106
        assert server.url.endswith("/?token=t0ken")
        assert fetch(base + "/")[0] == 401
        assert fetch(base + "/?token=wrong")[0] == 401
        status, headers, _ = fetch(base + "/runs/1?token=t0ken&x=1")
        assert status == 303
        assert headers["location"] == "/runs/1?x=1"
        assert headers["set-cookie"].startswith(f"{COOKIE}=t0ken;")
        assert "HttpOnly" in headers["set-cookie"]
        assert fetch(base + "/", {"Cookie": f"{COOKIE}=t0ken"})[0] == 200
        assert fetch(base + "/", {"Cookie": f"{COOKIE}=nope"})[0] == 401
        assert fetch(base + "/", {"Authorization": "Bearer t0ken"})[0] == 200
        assert fetch(base + "/static/ui.css")[0] == 401


def test_binding_every_interface_makes_a_token_unless_told_open(sqlite_built: Built) -> None:
    with Ledger.open(sqlite_built.url, read_only=True) as ledger:
        guarded = UiServer(ledger, bind="0.0.0.0:0")
        assert guarded.token
        assert f"?token={guarded.token}" in guarded.url
        assert UiServer(ledger, bind="0.0.0.0:0", open_access=True).token is None
        assert UiServer(ledger, bind="127.0.0.1:0").token is None


def test_on_loopback_a_foreign_host_name_is_refused(sqlite_built: Built) -> None:
    # A page elsewhere whose DNS name is rebound to 127.0.0.1 must get nothing.
    with serving(sqlite_built.url) as (_, base):
        status, _, message = fetch(base + "/", {"Host": "attacker.example:8765"})
        assert status == 421
        assert "loopback" in message
        assert fetch(base + "/", {"Host": "localhost:8765"})[0] == 200


def test_cli_serves_prints_its_url_and_refuses_a_bad_bind(sqlite_built: Built) -> None:
    jobfleet = Path(sys.executable).with_name("jobfleet")
    path = sqlite_built.url.removeprefix("sqlite:///")
    bad = subprocess.run([str(jobfleet), "ui", "--ledger", path, "--bind", "nowhere"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0
    assert "--bind 'nowhere' must be HOST:PORT" in bad.stderr
    missing = subprocess.run([str(jobfleet), "ui", "--ledger", f"{path}.missing"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1
    assert "There is no ledger at" in missing.stderr
    process = subprocess.Popen(
        [str(jobfleet), "ui", "--json", "--ledger", path, "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        assert line["token_required"] is False
        assert line["ledger"].endswith("ledger.db")
        status, _, html = wait_for(lambda: _answer(line["url"]), "the ui to answer")
        assert status == 200
        assert "nightly" in html
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answer(url: str) -> tuple[int, dict[str, str], str] | None:
    try:
        return fetch(url)
    except OSError:
        return None


# --- in a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary, driver = find_browser()
    if binary is None:
        pytest.skip("no Chromium binary (chromium) on this machine: apt-get install chromium")
    if driver is None:  # the browser without its driver is a broken install, not a skip
        pytest.fail(
            "chromium is installed but chromedriver is not: apt-get install chromium-driver"
        )
    with Browser(binary, driver, width=1280, height=1000) as opened:
        yield opened


@contextmanager
def shot_on_failure(browser: Browser, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        saved = browser.screenshot(ARTIFACTS / f"{name}.png")
        print(f"screenshot of the failing page: {saved}", file=sys.stderr)
        raise


def test_browser_runs_page_lists_a_finished_and_a_running_run(
    browser: Browser, sqlite_built: Built
) -> None:
    with serving(sqlite_built.url) as (_, base), shot_on_failure(browser, "runs-page"):
        browser.open(base + "/")
        assert browser.count("tr.run-row") == 2
        assert browser.text("tr.status-done td.name") == "nightly"
        assert browser.text("tr.status-running td.name") == f"live {HOSTILE_IMG}"
        assert browser.text("tr.status-running .owner") == "alive"


def test_browser_run_page_plot_has_a_point_per_attempt(
    browser: Browser, sqlite_built: Built
) -> None:
    with serving(sqlite_built.url) as (_, base), shot_on_failure(browser, "run-plot"):
        browser.open(f"{base}/runs/{sqlite_built.done}")
        assert browser.count("#plot-memory circle.point") == sqlite_built.memory_points
        # Drawn: the circles have a size on the page, not only a place in the document.
        drawn = browser.script(
            "return [...document.querySelectorAll('#plot-memory circle.point')]"
            ".filter(c => c.getBoundingClientRect().width > 0).length;"
        )
        assert drawn == sqlite_built.memory_points
        assert browser.count("#plot-timeline polygon.band") == 4


def test_browser_live_page_updates_when_a_task_finishes(
    browser: Browser, sqlite_built: Built
) -> None:
    with serving(sqlite_built.url) as (_, base), shot_on_failure(browser, "live-page"):
        browser.open(f"{base}/runs/{sqlite_built.live}")
        # A marker on the page: gone if the page were reloaded rather than updated in place.
        browser.script("window.stayed = true;")
        assert browser.text(".count-done") == "0 done"
        finish_live_task(sqlite_built, end_run=False)
        wait_for(lambda: browser.text(".count-done") == "1 done", "the page to show 1 done")
        finish_live_task(sqlite_built, end_run=True)
        wait_for(lambda: browser.text("#run-status") == "killed", "the page to show the end")
        wait_for(lambda: browser.text("#live-status") == "ended", "the live mark to end")
        assert browser.script("return window.stayed === true;")


def test_browser_shows_a_hostile_task_name_as_text(browser: Browser, sqlite_built: Built) -> None:
    with serving(sqlite_built.url) as (_, base), shot_on_failure(browser, "hostile"):
        for path in ("/", f"/runs/{sqlite_built.done}/tasks",
                     f"/runs/{sqlite_built.done}/tasks/{sqlite_built.hostile_task}"):  # fmt: skip
            browser.open(base + path)
            assert browser.script("return window.pwned === undefined;")
            assert browser.count("main script, main img") == 0
        assert browser.text("h1 .name") == HOSTILE
        browser.open(f"{base}/runs/{sqlite_built.done}/tasks")
        assert HOSTILE in browser.texts("td.name")


def test_browser_hello_example_every_page_and_the_readme_screenshot(
    browser: Browser, tmp_path: Path
) -> None:
    """`jobfleet run examples/hello.yaml`, then every page of `jobfleet ui` on its ledger."""
    jobfleet = Path(sys.executable).with_name("jobfleet")
    ledger = tmp_path / "ledger.db"
    done = subprocess.run(
        [str(jobfleet), "run", str(ROOT / "examples" / "hello.yaml"), "--ledger", str(ledger)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with serving(f"sqlite:///{ledger}") as (_, base), shot_on_failure(browser, "hello"):
        browser.open(base + "/")
        browser.open(base + "/runs/1")
        assert browser.text("#run-status") == "done"
        assert browser.count("#plot-memory circle.point") == 7  # 5 tasks, 2 of them retried
        assert browser.count("#plot-runtime circle.point") == 7
        assert browser.count("#plot-cpu rect.bar") > 0
        assert browser.count("details.failure-group") == 2  # oom and failed
        browser.open(base + "/runs/1/tasks")
        assert browser.count("tr.task-row") == 5
        for task in range(1, 6):
            browser.open(f"{base}/runs/1/tasks/{task}")
            assert browser.count("article.attempt") >= 1
        assert "used 130 MiB" in browser.text("pre.log")  # memory-hungry's output
        browser.open(base + "/runs/1")
        browser.resize(1280, 1500)
        browser.screenshot(ROOT / "docs" / "images" / "ui-run.png")


# --- bounded cost ---------------------------------------------------------------------------


def test_no_page_statement_scans_a_whole_table_on_sqlite(sqlite_built: Built) -> None:
    """Every statement behind the run page and each sort of the tasks page reads through an
    index (SQLite's plan says SEARCH, never SCAN of a whole table), and the tasks sorted by
    usage come in the index's order, unsorted (bench/ui.py measures a million instances)."""
    from sqlalchemy import event

    from jobfleet.core.host.ui import app, data

    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    with Ledger.open(sqlite_built.url, read_only=True) as ledger:
        event.listen(ledger.engine, "before_cursor_execute", record)
        with ledger.read_session() as session:
            app._heavy(session, sqlite_built.done)
            for sort in data.TASK_SORTS:
                for descending in (False, True):
                    query = data.TaskQuery(sort=sort, descending=descending, state="done")
                    data.task_page(session, sqlite_built.done, query)
        event.remove(ledger.engine, "before_cursor_execute", record)
        scans = []
        with ledger.engine.connect() as connection:
            for statement, parameters in seen:
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                for row in plan:
                    detail = row[-1]
                    if re.match(r"SCAN (tasks|task_instances|events)\b", detail):
                        scans.append((detail, statement))
                    # Sorted by usage, the index gives the order: nothing of the run is sorted.
                    if "NOT (EXISTS" in statement and "TEMP B-TREE" in detail:
                        scans.append((detail, statement))
    assert len(seen) > 15
    assert not scans, scans
