# ruff: noqa: S105, S106 - the tokens here are made up for the tests
"""The http channel's own guarantees: idempotent posts, auth, limits, robustness, restarts, TLS.

The channel contract shared with the file transport is in test_channel.py (its BOTH tests);
here are what only a server has: requests that are replayed, cut off, unauthorised, too large,
slow or hostile, and a server that goes away and comes back on the same port.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.channel import (
    ChannelError,
    Event,
    EventKind,
    FileChannel,
    FinalReport,
    TaskSpec,
    open_channel,
)
from jobfleet.core.channel.http import HttpChannel, read_token
from jobfleet.core.host.channel_server import (
    TOKEN_FILE,
    ChannelServer,
    ChannelServerError,
    load_or_create_token,
    serve_channel,
)
from jobfleet.core.wrapper import (
    CHANNEL_CA_VARIABLE,
    CHANNEL_TOKEN_FILE_VARIABLE,
    CHANNEL_TOKEN_VARIABLE,
    HOST_ONLY_VARIABLES,
)


@pytest.fixture
def host(tmp_path):
    return FileChannel.create(tmp_path / "channel")


@pytest.fixture
def served(host, monkeypatch):
    served = serve_channel(host, "run-1-test")
    monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, served.token)
    monkeypatch.setenv("JOBFLEET_CHANNEL_RETRY_SECONDS", "5")
    yield served
    served.close()


class Raw:
    """Plain requests to the server, for what the client never sends."""

    def __init__(self, served, token=None):
        self.port = served.server.port
        self.base = f"/runs/{served.key}"
        self.token = served.token if token is None else token

    def request(self, method, path, body=None, headers=None, *, auth=True):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            connection.request(method, self.base + path, body=body, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            try:
                answer = json.loads(raw) if raw else None
            except ValueError:  # uvicorn's own 503, at its connection limit, is plain text
                answer = raw.decode()
            return response.status, answer, response
        finally:
            connection.close()

    def post(self, tid, writer, lines, **kwargs):
        return self.request("POST", f"/events/{tid}/{writer}", b"".join(lines), **kwargs)


def lines(tid, writer, sequences, kind=EventKind.HEARTBEAT):
    return [Event(kind, tid, writer, n, 1.0, {"n": n}).to_line() for n in sequences]


def stored(host):
    events, _ = host.read_events()
    return [(e.writer, e.sequence) for e in events]


# Idempotency.


def test_replayed_and_overlapping_posts_are_stored_once(host, served):
    raw = Raw(served)
    assert raw.post(5, "w1", lines(5, "w1", [0, 1]))[:2] == (
        200,
        {"stored": 2, "duplicates": 0, "highest": 1},
    )
    # The same post again (its answer was lost, say): acknowledged, not stored twice.
    assert raw.post(5, "w1", lines(5, "w1", [0, 1]))[:2] == (
        200,
        {"stored": 0, "duplicates": 2, "highest": 1},
    )
    # A buffered batch that overlaps what arrived.
    assert raw.post(5, "w1", lines(5, "w1", [1, 2, 3]))[1]["stored"] == 2
    assert stored(host) == [("w1", 0), ("w1", 1), ("w1", 2), ("w1", 3)]


def test_torn_or_malformed_posts_store_nothing(host, served):
    raw = Raw(served)
    whole = b"".join(lines(5, "w1", [0, 1]))
    status, answer, _ = raw.request("POST", "/events/5/w1", whole[:-10])
    assert status == 400
    assert "cut off" in answer["error"]
    # One bad line spoils the post: the good line before it is not stored either.
    status, answer, _ = raw.post(5, "w1", [lines(5, "w1", [0])[0], b'{"kind": "heart\n'])
    assert (status, "Line 2" in answer["error"]) == (400, True)
    # A line for another instance or writer than the path's.
    assert raw.post(5, "w1", lines(5, "w2", [0]))[0] == 400
    assert raw.post(5, "w1", lines(5, "w1", [1, 0]))[0] == 400  # out of order
    assert raw.post(5, "w1", [])[0] == 400
    # A body cut off by a client that hung up: the server never sees it whole.
    with socket.create_connection(("127.0.0.1", raw.port)) as sock:
        head = (
            f"POST {raw.base}/events/5/w1 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {raw.token}\r\nContent-Length: {len(whole)}\r\n\r\n"
        )
        sock.sendall(head.encode() + whole[: len(whole) // 2])
    time.sleep(0.3)
    assert stored(host) == []
    assert raw.post(5, "w1", lines(5, "w1", [0]))[1]["stored"] == 1
    assert stored(host) == [("w1", 0)]


def test_a_restarted_server_knows_what_each_writer_stored(host, served, tmp_path):
    raw = Raw(served)
    raw.post(5, "w1", lines(5, "w1", [0, 1, 2]))
    bind = served.bind
    served.close()
    # A host crash mid-write leaves a partial record at the end of the file.
    path = os.path.join(host.root, "events", "5.w1.jsonl")
    with open(path, "ab") as stream:
        stream.write(lines(5, "w1", [3])[0][:20])
    again = serve_channel(FileChannel(host.root), "run-1-test", bind=bind)
    try:
        assert again.bind == bind
        assert raw.post(5, "w1", lines(5, "w1", [0, 1, 2]))[1]["duplicates"] == 3
        assert raw.post(5, "w1", lines(5, "w1", [2, 3]))[1] == {
            "stored": 1,
            "duplicates": 1,
            "highest": 3,
        }
        events, cursor = host.read_events()
        assert [e.sequence for e in events] == [0, 1, 2, 3]
        assert len(cursor.problems) == 1  # the partial record alone is lost, and said
    finally:
        again.close()


# Authentication.


def test_requests_without_the_right_token_are_refused(host, served):
    host.put_spec(TaskSpec(5, "true", "t"))
    for raw, auth in [(Raw(served), False), (Raw(served, token="wrong"), True)]:
        status, answer, response = raw.request("GET", "/specs/5", auth=auth)
        assert status == 401
        assert "token" in answer["error"]
        assert response.getheader("WWW-Authenticate").startswith("Bearer")
        assert raw.post(5, "w1", lines(5, "w1", [0]), auth=auth)[0] == 401
    assert stored(host) == []
    ok = Raw(served)
    assert ok.request("GET", "/specs/5")[0] == 200
    basic = {"Authorization": f"Basic {ok.token}"}
    assert ok.request("GET", "/specs/5", headers=basic, auth=False)[0] == 401


def test_the_worker_needs_the_token_and_a_wrong_one_fails_at_once(served, monkeypatch):
    monkeypatch.delenv(CHANNEL_TOKEN_VARIABLE)
    with pytest.raises(ChannelError, match=CHANNEL_TOKEN_VARIABLE):
        open_channel(served.url)
    monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, "not-the-token")
    started = time.monotonic()
    with pytest.raises(ChannelError, match="401"):
        open_channel(served.url)
    assert time.monotonic() - started < 2  # refused, not retried


def test_the_token_may_come_from_a_file(served, monkeypatch, tmp_path):
    monkeypatch.delenv(CHANNEL_TOKEN_VARIABLE)
    secret = tmp_path / "secret" / "token"
    secret.parent.mkdir()
    secret.write_text(served.token + "\n")
    monkeypatch.setenv(CHANNEL_TOKEN_FILE_VARIABLE, str(secret))
    assert read_token() == served.token
    open_channel(served.url).close()
    monkeypatch.setenv(CHANNEL_TOKEN_FILE_VARIABLE, str(tmp_path / "missing"))
    with pytest.raises(ChannelError, match="Could not read the channel token"):
        read_token()


def test_the_token_is_logged_nowhere_and_stored_only_in_its_0600_file(
    host, served, caplog, capfd, tmp_path
):
    caplog.set_level(logging.DEBUG)
    token = served.token
    host.put_spec(TaskSpec(5, "true", "t"))
    channel = open_channel(served.url)
    with channel.open_writer(5) as writer:
        writer.send_report(FinalReport("D"), durable=True)
    channel.get_spec(5)
    with pytest.raises(ChannelError):
        channel.get_spec(6)
    raw = Raw(served)
    raw.post(5, "w", [b"{not json\n"])
    raw.request("GET", "/nowhere")
    Raw(served, token=token + "x").request("GET", "/specs/5")
    with socket.create_connection(("127.0.0.1", raw.port)) as sock:
        sock.sendall(b"GARBAGE " + token.encode() + b"\r\n\r\n")
        sock.recv(1000)
    channel.close()
    out, err = capfd.readouterr()
    assert token not in caplog.text + out + err
    holders = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and token.encode() in path.read_bytes()
    ]
    assert holders == [Path(host.root, TOKEN_FILE)]
    assert stat.S_IMODE(holders[0].stat().st_mode) == 0o600
    assert load_or_create_token(host.root) == token  # the same token when served again


def test_the_channel_url_holds_no_secret(served):
    assert served.token not in served.url
    with pytest.raises(ChannelError, match="credentials"):
        HttpChannel("http://user:pw@127.0.0.1:1/runs/x", token="t")


def test_token_variables_are_kept_from_tasks():
    assert {CHANNEL_TOKEN_VARIABLE, CHANNEL_TOKEN_FILE_VARIABLE, CHANNEL_CA_VARIABLE} <= (
        HOST_ONLY_VARIABLES
    )


def test_distributors_take_the_token_from_the_host_or_the_environment(monkeypatch):
    class Mine(BaseClusterDistributor):
        cluster_type = "mine"

    Mine.__abstractmethods__ = frozenset()  # only the base's own part is under test

    assert Mine.needs_network_channel is False
    monkeypatch.delenv(CHANNEL_TOKEN_VARIABLE, raising=False)
    assert Mine("c").channel_token is None
    assert Mine("c", channel_token="abc").channel_token == "abc"
    monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, "from-env")
    assert Mine("c").channel_token == "from-env"
    assert "from-env" not in Mine("c", host_url="http://h:1/runs/r").wrapper_argv("job")


# Limits and bad requests.


def test_limits_and_errors_are_clear_json(host, served):
    raw = Raw(served)
    status, answer, _ = raw.request(
        "POST", "/events/5/w1", b"x" * (1024 * 1024 + 1), headers={"Content-Type": "x"}
    )
    assert status == 413
    assert "at most" in answer["error"]
    assert raw.post(5, "w1", [b"{]\n"])[0] == 400
    assert raw.post(5, ".hidden", lines(5, ".hidden", [0]))[0] in (400, 404)
    assert raw.request("GET", "/specs/99")[:2] == (
        404,
        {"error": "There is no spec for task instance 99."},
    )
    assert raw.request("GET", "/arrays/1/0/0")[0] == 404
    host.put_array(1, 0, {0: 7})
    status, answer, _ = raw.request("GET", "/arrays/1/0/3")
    assert (status, answer["error"]) == (404, "Array 1 batch 0 has no step 3.")
    assert raw.request("GET", "/arrays/1/0/0")[1] == {"task_instance_id": 7, "spec": None}
    status, answer, _ = raw.request("GET", "/specs/abc")
    assert status == 404
    assert "error" in answer
    assert raw.request("DELETE", "/specs/1")[0] == 405
    other = Raw(served)
    other.base = "/runs/no-such-run"
    assert other.request("GET", "/channel")[:2] == (
        404,
        {"error": "This server serves no such channel."},
    )
    assert raw.request("GET", "/channel")[1] == {"protocol": 1}


def test_a_slow_client_does_not_block_others_and_times_out(host, tmp_path, monkeypatch):
    host.put_spec(TaskSpec(5, "true", "t"))
    server = ChannelServer(body_timeout=1.0).start()
    try:
        token = "t0ken"
        url = server.serve("r", host, token)
        raw = Raw(type("S", (), {"server": server, "key": "r", "token": token})())
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(
            f"POST /runs/r/events/5/w HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        started = time.monotonic()
        monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, token)
        assert open_channel(url).get_spec(5).command == "true"
        assert raw.request("GET", "/specs/5")[0] == 200
        assert time.monotonic() - started < 1.0
        slow.settimeout(5)
        answer = slow.recv(1000)
        assert b" 408 " in answer.split(b"\r\n", 1)[0]
        slow.close()
    finally:
        server.stop()


def test_the_server_survives_a_flood_of_bad_requests(host, served):
    host.put_spec(TaskSpec(5, "true", "t"))
    port = served.server.port
    junk = [
        b"\x00\x01\x02" * 100,
        b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 100_000 + b"\r\n\r\n",
        b"POST /runs/run-1-test/events/5/w HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /runs/run-1-test/specs/5 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
        b"POST /runs/run-1-test/events/5/w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    failures = []

    def attack(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(junk[n % len(junk)])
                sock.shutdown(socket.SHUT_WR)
                sock.recv(100)
        except OSError:
            pass
        except Exception as exc:  # any other failure is the test's finding
            failures.append(exc)

    threads = [threading.Thread(target=attack, args=(n,)) for n in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert served.server.running
    assert open_channel(served.url).get_spec(5).command == "true"


def test_too_many_requests_at_once_get_503_and_the_client_retries(host, tmp_path, monkeypatch):
    host.put_spec(TaskSpec(5, "true", "t"))
    server = ChannelServer(limit_concurrency=2).start()
    try:
        url = server.serve("r", host, "tok")
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        time.sleep(0.2)
        raw = Raw(type("S", (), {"server": server, "key": "r", "token": "tok"})())
        assert raw.request("GET", "/specs/5")[0] == 503
        for sock in idle:
            sock.close()
        monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, "tok")
        assert open_channel(url).get_spec(5).command == "true"  # retried until there was room
    finally:
        server.stop()


# The host going away and coming back.


def test_events_sent_while_the_server_is_down_arrive_exactly_once(host, served, monkeypatch):
    channel = open_channel(served.url)
    writer = channel.open_writer(5)
    first = writer.send("running")
    bind = served.bind
    served.close()
    sent = []
    sender = threading.Thread(
        target=lambda: sent.extend(writer.send("heartbeat", {"n": n}) for n in range(3))
    )
    sender.start()  # blocks, retrying, while the server is down
    time.sleep(1.0)
    assert sender.is_alive()
    again = serve_channel(FileChannel(host.root), "run-1-test", bind=bind)
    try:
        sender.join(timeout=10)
        assert not sender.is_alive()
        final = writer.send_report(FinalReport("D"), durable=True)
        events, _ = host.read_events()
        assert events == [first, *sent, final]
    finally:
        writer.close()
        again.close()


def test_an_empty_token_file_left_by_a_killed_host_is_replaced(tmp_path):
    # A host killed between creating the token file and writing it left it empty, and every
    # --resume of the run then failed; an empty file was never handed to a wrapper.
    (tmp_path / TOKEN_FILE).write_text("")
    token = load_or_create_token(tmp_path)
    assert token
    assert (tmp_path / TOKEN_FILE).read_text().strip() == token
    assert load_or_create_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [TOKEN_FILE]  # no temporary left


def test_a_new_server_serves_the_run_before_it_accepts_a_request(host, monkeypatch, tmp_path):
    # Wrappers of a resumed run connect while its server starts; their reports wait in the
    # socket's backlog and are answered as soon as it accepts. A run registered only after
    # start() made them "no such channel" (404), and they gave their final reports up.
    served_at_start = []
    original = ChannelServer.start

    def start(self, *args, **kwargs):
        served_at_start.append(list(self.keys))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ChannelServer, "start", start)
    first = serve_channel(host, "run-7-first")
    try:
        other = serve_channel(FileChannel.create(tmp_path / "other"), "run-8-other")
        other.close()
    finally:
        first.close()
    assert served_at_start == [["run-7-first"]]  # the second run shared the running server


def test_a_send_that_gave_up_is_delivered_with_the_next_one(host, served, monkeypatch):
    monkeypatch.setenv("JOBFLEET_CHANNEL_RETRY_SECONDS", "0.5")
    writer = open_channel(served.url).open_writer(5)
    first = writer.send("running")
    bind = served.bind
    served.close()
    with pytest.raises(ChannelError, match=r"did not answer usefully in 0\.5 s"):
        writer.send("heartbeat", {"n": 1})
    again = serve_channel(FileChannel(host.root), "run-1-test", bind=bind)
    try:
        last = writer.send_report(FinalReport("D"), durable=True)
        events, _ = host.read_events()
        assert [e.sequence for e in events] == [0, 1, 2]  # the lost send kept its number
        assert events[0] == first
        assert events[2] == last
        assert events[1].data == {"n": 1}
    finally:
        writer.close()
        again.close()


def test_a_port_in_use_is_a_clear_error(host, served):
    with pytest.raises(ChannelServerError, match="Could not serve the channel"):
        ChannelServer(served.bind).start()


# TLS.


@pytest.fixture
def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    result = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {result.stderr[-300:]!r}")
    return cert, key


def test_tls_with_a_self_signed_certificate(host, self_signed, monkeypatch):
    cert, key = self_signed
    host.put_spec(TaskSpec(5, "true", "t"))
    served = serve_channel(host, "tls", tls_cert=str(cert), tls_key=str(key))
    try:
        assert served.url.startswith("https://127.0.0.1:")
        monkeypatch.setenv(CHANNEL_TOKEN_VARIABLE, served.token)
        monkeypatch.delenv(CHANNEL_CA_VARIABLE, raising=False)
        with pytest.raises(ChannelError, match="certificate"):
            open_channel(served.url)
        monkeypatch.setenv(CHANNEL_CA_VARIABLE, str(cert))
        channel = open_channel(served.url)
        assert channel.get_spec(5).command == "true"
        with channel.open_writer(5) as writer:
            writer.send_report(FinalReport("D"), durable=True)
        assert [e.kind for e in host.read_events()[0]] == [EventKind.FINAL]
        # Plain HTTP to the TLS port gets nowhere.
        plain = served.url.replace("https://", "http://")
        with pytest.raises(ChannelError):
            HttpChannel(plain, token=served.token, retry_seconds=0.3)
    finally:
        served.close()


def test_tls_needs_both_files(tmp_path):
    with pytest.raises(ChannelServerError, match="both"):
        ChannelServer(tls_cert=str(tmp_path / "c"))


# Lightness of the worker side.


def test_the_client_imports_no_server_library_and_the_channel_package_no_client():
    code = (
        "import sys, jobfleet.core.channel as c\n"
        "assert 'jobfleet.core.channel.http' not in sys.modules, 'http at import'\n"
        "assert 'http.client' not in sys.modules, 'http.client at import'\n"
        "import jobfleet.core.channel.http\n"
        "bad = {'starlette', 'uvicorn', 'anyio', 'h11', 'sqlalchemy'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_packed_members_marks_reach_the_file_channel_both_ways(host, served):
    """A pack worker's running mark and the host's kill request, over http and on disk."""
    worker = HttpChannel(served.url)
    assert worker.supports_member_kills
    assert (worker.member_running("4.0.7"), worker.member_kill_requested("4.0.7")) == (False, False)
    worker.mark_member_running("4.0.7", True)
    assert host.member_running("4.0.7")  # what the server keeps: the file channel's marks
    worker.request_member_kill("4.0.7")  # the host's distributor asks through its own client
    assert worker.member_kill_requested("4.0.7")
    assert host.member_kill_requested("4.0.7")
    worker.mark_member_running("4.0.7", False)
    assert not worker.member_running("4.0.7")
    assert not host.member_running("4.0.7")
    assert not host.member_kill_requested("4.0.8")  # one member's kill is that member's only
    worker.close()


def test_a_member_key_that_is_not_one_is_refused(served):
    raw = Raw(served)
    for key in ("..", "1.2", "a.b.c", "1.2.3.4"):
        status, answer, _ = raw.request("GET", f"/members/{key}")
        assert status in (400, 404), (key, status, answer)
    status, answer, _ = raw.request("DELETE", "/members/1.2.3/kill")
    assert status == 405, answer
    status, _, _ = raw.request("GET", "/members/1.2.3", auth=False)
    assert status == 401
