"""One watch stream per kind (pods, Jobs) of a run, kept in a local store by a thread.

A list gives the store and a `resourceVersion`; a watch from there streams every change
(with bookmarks, so a quiet stream still moves its version on). When the server says the
version is too old — `410 Gone`, as an HTTP status or as an `ERROR` event whose object is a
`Status` with code 410 (real servers do both) — the informer lists again and tells its owner
only what differs from its store: nothing is lost, and nothing is told twice (an object is told
again only when its `resourceVersion` changed). A relist every `relist_interval` seconds is a
safety net against a stream that silently missed something.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jobfleet.plugins.kubernetes.api import KubeApi, KubeApiError, Resource

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any], bool], None]
"""Called with an object that is new or changed (False), or gone (True), under the lock."""

_FATAL = (401, 403)
_BACKOFF_MAX = 30.0


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """The objects of one kind that match the run's label, kept current by a thread."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        namespace: str,
        selector: str,
        listener: Listener,
        lock: threading.RLock,
        *,
        watch_timeout: int = 240,
        relist_interval: float = 600.0,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.listener = listener
        self.lock = lock
        self.watch_timeout = watch_timeout
        self.relist_interval = relist_interval
        self.store: dict[str, dict[str, Any]] = {}
        self.version: str | None = None
        self.failure: KubeApiError | None = None
        """A failure that retrying cannot mend (401, 403), for the owner to surface."""
        self.relists = 0
        self.gone = 0  # 410s seen
        self.changed = threading.Condition(lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._relisted_at = time.monotonic()

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        """List once (so the store is complete when this returns), then watch in a thread."""
        self.relist()
        self._thread = threading.Thread(
            target=self._run, name=f"jobfleet-kubernetes-watch-{self.resource.plural}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    # -- the store --------------------------------------------------------------------------------

    def relist(self) -> None:
        """Replace the store by a fresh list, telling the listener what differs."""
        answer = self.api.call(
            "GET",
            self.resource.path(self.namespace),
            verb="list",
            resource=self.resource.plural,
            what=f"the list of the run's {self.resource.plural}",
            query={"labelSelector": self.selector},
        )
        items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
        fresh = {_name(item): item for item in items if _name(item)}
        with self.lock:
            for name, obj in fresh.items():
                old = self.store.get(name)
                if old is None or _version(old) != _version(obj):
                    self.listener(obj, False)
            for name, old in self.store.items():
                if name not in fresh:
                    self.listener(old, True)
            self.store = fresh
            self.version = str((answer.get("metadata") or {}).get("resourceVersion") or "") or None
            self.relists += 1
            self._relisted_at = time.monotonic()
            self.changed.notify_all()

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) into the store."""
        name = _name(obj)
        if not name:
            return
        with self.lock:
            old = self.store.get(name)
            if kind == "DELETED":
                if old is not None:
                    del self.store[name]
                    self.listener(obj, True)
            elif old is None or _version(old) != _version(obj):
                self.store[name] = obj
                self.listener(obj, False)
            version = _version(obj)
            if version:
                self.version = version
            self.changed.notify_all()

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.version is None or self._relist_due():
                    self.relist()
                self._watch_once()
                failures = 0
            except KubeApiError as exc:
                if exc.status == 410:
                    self.gone += 1
                    self.version = None  # too old: list again, then watch from there
                    continue
                if exc.status in _FATAL:
                    self.failure = exc
                failures += 1
                log.warning("watching %s failed: %s", self.resource.plural, exc)
                self._stop.wait(min(_BACKOFF_MAX, 0.5 * 2**failures))
            except Exception as exc:  # a torn stream, bad JSON: resume from the version
                failures += 1
                log.warning("the watch of %s broke: %s", self.resource.plural, exc)
                self._stop.wait(min(_BACKOFF_MAX, 0.2 * 2**failures))

    def _relist_due(self) -> bool:
        return time.monotonic() - self._relisted_at >= self.relist_interval

    def _watch_once(self) -> None:
        left = self.relist_interval - (time.monotonic() - self._relisted_at)
        timeout = max(1, min(self.watch_timeout, int(left) + 1))
        query = {
            "labelSelector": self.selector,
            "resourceVersion": self.version,
            "timeoutSeconds": timeout,
        }
        for event in self.api.watch(self.resource, self.namespace, query, timeout):
            if self._stop.is_set():
                return
            kind = str(event.get("type") or "")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                code = int(obj.get("code") or 0)
                raise KubeApiError(
                    f"the watch of {self.resource.plural} ended: {obj.get('message', '')}",
                    code,
                    obj,
                )
            if kind == "BOOKMARK":
                version = _version(obj)
                if version:
                    self.version = version
                continue
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.apply(kind, obj)
            if self._relist_due():
                return
