"""Streaming a task's stdout or stderr to its log file while keeping a bounded tail.

The log file gets the bytes exactly as the task wrote them (nothing dropped or re-encoded), in
64 KiB chunks, so a task writing gigabytes costs the wrapper no memory. The tail, sent in the
final report, is decoded incrementally as UTF-8: a character split across two reads is joined,
and invalid bytes become U+FFFD instead of being lost.
"""

from __future__ import annotations

import codecs
import os
import select
import threading

from jobfleet.core.private import open_private

CHUNK = 64 * 1024
TAIL_CHARACTERS = 10_000


class Tail:
    """The last `limit` characters of a growing text, in bounded memory."""

    def __init__(self, limit: int = TAIL_CHARACTERS) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._length = 0

    def feed(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._length += len(text)
        if self._length > 2 * self._limit:  # compact now and then, not on every chunk
            self._parts = [self.text()]
            self._length = len(self._parts[0])

    def text(self) -> str:
        return "".join(self._parts)[-self._limit :]


class OutputPump(threading.Thread):
    """Drains one pipe of the task into a log file (or nowhere) and a tail."""

    def __init__(self, fd: int, log_path: str | None, stream: str) -> None:
        super().__init__(name=f"jobfleet-{stream}", daemon=True)
        self._fd = fd
        self._log_path = log_path
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail = Tail()
        self.bytes_read = 0
        self.log_error: str | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Stop once the pipe has nothing more to give right now.

        For a pipe still held open by a process the wrapper could not kill: waiting for its
        end-of-file would hang the final report.
        """
        self._stopping.set()

    def run(self) -> None:
        log_fd = self._open_log()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while chunk := self._next_chunk(poller):
                self.bytes_read += len(chunk)
                if log_fd is not None:
                    log_fd = self._write(log_fd, chunk)
                self.tail.feed(self._decoder.decode(chunk))
            self.tail.feed(self._decoder.decode(b"", final=True))
        finally:
            if log_fd is not None:
                os.close(log_fd)

    def _next_chunk(self, poller: select.poll) -> bytes:
        """The next chunk, or b"" at end-of-file or when stopped with nothing pending."""
        while not poller.poll(200):
            if self._stopping.is_set():
                return b""
        return os.read(self._fd, CHUNK)

    def _open_log(self) -> int | None:
        if self._log_path is None:
            return None
        try:
            # Owner-only: a task's output may show its secrets.
            return open_private(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            self.log_error = f"cannot open the log {self._log_path}: {exc}"
            return None

    def _write(self, log_fd: int, chunk: bytes) -> int | None:
        # A full disk must not stop the pump: the task would block on a full pipe. Keep
        # draining, stop logging, and say so in the final report.
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(log_fd, view) :]
        except OSError as exc:
            self.log_error = f"writing the log {self._log_path} failed: {exc}"
            os.close(log_fd)
            return None
        return log_fd
