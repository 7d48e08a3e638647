"""`ExecutorTestParams`: one `--executors` entry, `NAME[:LAUNCHER[:URL]]`."""

from __future__ import annotations


class ExecutorTestParams:
    def __init__(self, text: str) -> None:
        parts = text.split(":", 2)
        self.executor = parts[0]
        self.launcher: str | None = (parts[1] or None) if len(parts) > 1 else None
        self.url: str | None = (parts[2] or None) if len(parts) > 2 else None
        # Batch-queue details the tests put on a job's attributes; none by default.
        self.account: str | None = None
        self.queue_name: str | None = None
        self.multi_node_queue_name: str | None = None
        self.project_name: str | None = None
        self.custom_attributes: dict[str, object] | None = None

    def __str__(self) -> str:
        text = self.executor
        if self.launcher is not None or self.url is not None:
            text += f":{self.launcher or ''}"
        if self.url is not None:
            text += f":{self.url}"
        return text

    __repr__ = __str__
