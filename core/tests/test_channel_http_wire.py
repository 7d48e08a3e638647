"""The wrapper's own HTTP/1.1 client (`jobfleet.core.channel.http_wire`) and URL reading.

The channel tests (test_channel_http.py) run it against the real channel server; these put it
before a raw socket server that answers in each of the ways HTTP/1.1 allows, and in some it
does not, and compare the hand-written URL reading with urllib.parse's.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

from jobfleet.core.channel.http import _quote, _split
from jobfleet.core.channel.http_wire import BadReply, PlainConnection


class RawServer:
    """Accepts connections on loopback and answers each request with the next canned bytes."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while self.answers:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer or not answer.startswith(b"HTTP/1.1"):
                        break

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                size = int(line.split(b":")[1])
                while len(body) < size:
                    body += conn.recv(65536)
        return data

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[type[RawServer]]:
    made: list[RawServer] = []

    def make(answers: list[bytes]) -> RawServer:
        server = RawServer(answers)
        made.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def test_content_length_framed_answers_share_one_connection(raw_server) -> None:
    server = raw_server(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 3\r\n\r\n{}",
            b'HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{"a": 1}',
        ]
    )
    connection = PlainConnection("127.0.0.1", server.port, timeout=5)
    first = connection.exchange("GET", "/x", None, {"Authorization": "Bearer t"})
    second = connection.exchange("POST", "/y", b"line\n", {})
    connection.close()
    assert (first.status, first.body, first.will_close) == (200, b"{}", False)
    assert first.headers["retry-after"] == "3"
    assert (second.status, second.body) == (201, b'{"a": 1}')
    get, post = server.requests
    assert get.startswith(b"GET /x HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in get
    assert b"Authorization: Bearer t\r\n" in get
    assert b"Content-Length" not in get
    assert post.startswith(b"POST /y HTTP/1.1\r\n")
    assert post.endswith(b"Content-Length: 5\r\n\r\nline\n")


def test_chunked_informational_and_close_framed_answers(raw_server) -> None:
    server = raw_server(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
        ]
    )
    connection = PlainConnection("127.0.0.1", server.port, timeout=5)
    chunked = connection.exchange("GET", "/c", None, {})
    busy = connection.exchange("GET", "/b", None, {})
    assert (chunked.status, chunked.body, chunked.will_close) == (200, b"abcde", False)
    assert (busy.status, busy.body, busy.will_close) == (503, b"busy", True)

    closing = raw_server([b"HTTP/1.0 200 OK\r\n\r\nuntil the end"])
    old = PlainConnection("127.0.0.1", closing.port, timeout=5).exchange("GET", "/", None, {})
    assert (old.status, old.body, old.will_close) == (200, b"until the end", True)


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_a_bad_reply(raw_server, answer: bytes) -> None:
    server = raw_server([answer])
    connection = PlainConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises(BadReply):
        connection.exchange("GET", "/", None, {})


def test_a_refused_connection_is_an_oserror() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        PlainConnection("127.0.0.1", port, timeout=2).exchange("GET", "/", None, {})


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8765/runs/run-3-TOKEN",
        "HTTP://Host.Example:80/a/b/",
        "https://h/",
        "http://h",
        "http://h:0080//x",
        "http://h:65536/x",
        "http://h:/x",
        "http://[::1]:9000/r",
        "http://user:pw@h:1/r",
        "http://h:1/r?q=1#f",
        "http://h:1/r x",
        " http://h:1/r",
        "http://h\t:1/r",
        "http://h:1/%41~!$&'()*+,;=:@",
        "http://hé:1/r",
        "http://h:１/r",
    ],
)
def test_the_url_is_read_as_urlsplit_reads_it(url: str) -> None:
    mine, theirs = _split(url), urlsplit(url)
    for name in ("scheme", "hostname", "path", "query", "fragment", "username", "password"):
        assert getattr(mine, name) == getattr(theirs, name), name
    try:
        expected = theirs.port
    except ValueError:
        with pytest.raises(ValueError, match=r"out of range|invalid|Port"):
            _ = mine.port
    else:
        assert mine.port == expected


@pytest.mark.parametrize("text", ["host-1234-abcdef", "a b/c%d", "ünï", "~._-", ""])
def test_writer_tokens_are_quoted_as_urllib_quotes_them(text: str) -> None:
    assert _quote(text) == quote(text, safe="")
