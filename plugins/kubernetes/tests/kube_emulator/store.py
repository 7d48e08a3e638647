"""Objects, the global resourceVersion counter and the bounded watch history.

Stored objects are never modified in place: every write stores a new dict (callers copy before
changing), so readers may hold on to what they got and the history can keep references.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable
from typing import Any

from .util import new_uid, now_rfc3339, status_body

KINDS = {
    "pods": ("Pod", "v1"),
    "secrets": ("Secret", "v1"),
    "events": ("Event", "v1"),
    "nodes": ("Node", "v1"),
    "namespaces": ("Namespace", "v1"),
    "jobs": ("Job", "batch/v1"),
}
CLUSTER_SCOPED = {"nodes", "namespaces"}


class ApiError(Exception):
    """An error the server answers with a Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, reason=self.reason, details=self.details)


def not_found(resource: str, name: str) -> ApiError:
    group = "batch" if resource == "jobs" else ""
    return ApiError(
        404,
        f'{resource}{"." + group if group else ""} "{name}" not found',
        details={"name": name, "group": group, "kind": resource},
    )


class Store:
    def __init__(self, history_size: int = 50_000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 100
        self.floor = self.rv  # a watch from a resourceVersion below this is "too old"
        self.history_size = history_size
        self._history_rvs: list[int] = []
        self._history: list[tuple[int, str, str, dict[str, Any]]] = []
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self.listeners: list[Callable[[], None]] = []
        self.cut_generation = 0
        self.gone_as_event = False

    # -- internals ----------------------------------------------------------------------------
    def _record(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        self._history_rvs.append(self.rv)
        self._history.append((self.rv, resource, type_, obj))
        if len(self._history) > self.history_size * 2:
            cut = len(self._history) - self.history_size
            self.floor = max(self.floor, self._history_rvs[cut - 1])
            del self._history[:cut]
            del self._history_rvs[:cut]
        self.changed.notify_all()
        for listener in self.listeners:
            listener()

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        md = obj["metadata"]
        return (md.get("namespace", ""), md["name"])

    # -- reads ---------------------------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self._objects[resource].get((namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            objs = self._objects[resource]
            if namespace is None:
                return list(objs.values())
            return [o for (ns, _), o in objs.items() if ns == namespace]

    def events_since(self, rv: int) -> list[tuple[int, str, str, dict[str, Any]]]:
        with self.lock:
            i = bisect.bisect_right(self._history_rvs, rv)
            return self._history[i:]

    # -- writes --------------------------------------------------------------------------------
    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind, api_version = KINDS[resource]
        with self.lock:
            key = self._key(obj)
            if key in self._objects[resource]:
                name = key[1]
                group = "batch" if resource == "jobs" else ""
                raise ApiError(
                    409,
                    f'{resource}{"." + group if group else ""} "{name}" already exists',
                    reason="AlreadyExists",
                    details={"name": name, "group": group, "kind": resource},
                )
            self.rv += 1
            obj = dict(obj)
            obj["kind"], obj["apiVersion"] = kind, api_version
            md = dict(obj["metadata"])
            md.setdefault("uid", new_uid())
            md.setdefault("creationTimestamp", now_rfc3339())
            md["resourceVersion"] = str(self.rv)
            obj["metadata"] = md
            self._objects[resource][key] = obj
            self._record(resource, "ADDED", obj)
            return obj

    def mutate(
        self,
        resource: str,
        namespace: str,
        name: str,
        fn: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Apply fn to a deep copy of the object; store what it returns (None: no change).

        Returns the stored object (new or unchanged), or None when the object is gone.
        """
        with self.lock:
            old = self._objects[resource].get((namespace, name))
            if old is None:
                return None
            new = fn(copy.deepcopy(old))
            if new is None or new == old:
                return old
            return self._replace(resource, new)

    def _replace(self, resource: str, new: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self._objects[resource][self._key(new)] = new
        self._record(resource, "MODIFIED", new)
        return new

    def replace(self, resource: str, new: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self._key(new) not in self._objects[resource]:
                raise not_found(resource, new["metadata"]["name"])
            return self._replace(resource, new)

    def remove(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            old = self._objects[resource].pop((namespace, name), None)
            if old is None:
                return None
            self.rv += 1
            last = dict(old)
            last["metadata"] = dict(old["metadata"], resourceVersion=str(self.rv))
            self._record(resource, "DELETED", last)
            return last

    def compact(self, bump: bool = False) -> None:
        """Forget the watch history (every older resourceVersion becomes too old)."""
        with self.lock:
            if bump:
                self.rv += 1
            self.floor = self.rv
            self._history.clear()
            self._history_rvs.clear()
            self.changed.notify_all()

    def cut_watches(self) -> None:
        with self.lock:
            self.cut_generation += 1
            self.changed.notify_all()
