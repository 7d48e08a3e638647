"""The REST semantics: routing, verbs, selectors, pagination, patch, delete options, watch."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import validation
from .patch import json_patch, merge_patch, strategic_merge
from .store import CLUSTER_SCOPED, KINDS, ApiError, not_found
from .util import (
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    random_suffix,
    status_body,
)

if TYPE_CHECKING:
    from . import KubeEmulator


@dataclass
class Response:
    code: int
    body: Any = None  # a dict (JSON), str (text/plain) or an iterator of bytes lines (watch)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Route:
    resource: str  # "pods", "pods/log", "jobs/status", "version", ...
    namespace: str | None
    name: str | None


_ROUTES = [
    (re.compile(r"^/version/?$"), "version"),
    (re.compile(r"^/api/v1/namespaces/?$"), "namespaces"),
    (re.compile(r"^/api/v1/namespaces/(?P<name>[^/]+)$"), "namespaces"),
    (re.compile(r"^/api/v1/nodes(?:/(?P<name>[^/]+))?/?$"), "nodes"),
    (re.compile(r"^/api/v1/(?P<res>pods|secrets|events)/?$"), None),
    (re.compile(r"^/apis/batch/v1/(?P<res>jobs)/?$"), None),
    (
        re.compile(
            r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>pods|secrets|events)"
            r"(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?/?$"
        ),
        None,
    ),
    (
        re.compile(
            r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/(?P<res>jobs)"
            r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?/?$"
        ),
        None,
    ),
]


def route(path: str) -> Route | None:
    for pattern, fixed in _ROUTES:
        m = pattern.match(path)
        if not m:
            continue
        groups = m.groupdict()
        resource = fixed or groups["res"]
        if groups.get("sub"):
            if groups["sub"] == "log" and resource != "pods":
                return None
            resource = f"{resource}/{groups['sub']}"
        return Route(resource, groups.get("ns"), groups.get("name"))
    return None


def verb_of(method: str, r: Route, query: dict[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if r.name else "list"
    if method == "POST":
        return "create"
    if method == "PATCH":
        return "patch"
    if method == "PUT":
        return "update"
    if method == "DELETE":
        return "delete" if r.name else "deletecollection"
    return method.lower()


def _int(query: dict[str, str], key: str) -> int | None:
    v = query.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError as e:
        raise ApiError(400, f"invalid {key}: {v!r}") from e


class Api:
    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu
        self.store = emu.store

    # ------------------------------------------------------------------------------------------
    def handle(
        self,
        method: str,
        r: Route,
        verb: str,
        query: dict[str, str],
        body: bytes,
        content_type: str,
    ) -> Response:
        if r.resource == "version":
            return Response(
                200,
                {
                    "major": "1",
                    "minor": "33",
                    "gitVersion": "v1.33.0-jobfleet-emulator",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.24",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
        base = r.resource.split("/")[0]
        ns = r.namespace
        if base not in CLUSTER_SCOPED and ns is not None and verb == "create":
            self._require_namespace(ns)
        if r.resource == "pods/log":
            if verb != "get":
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    reason="MethodNotAllowed",
                )
            return self._log(ns or "default", r.name or "", query)
        if r.resource.endswith("/status"):
            if verb == "get":
                return Response(200, self._get(base, ns or "", r.name or ""))
            if verb in ("patch", "update"):
                return Response(
                    200, self._patch_status(base, ns or "", r.name or "", verb, body, content_type)
                )
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                reason="MethodNotAllowed",
            )
        if verb == "get":
            return Response(200, self._get(base, ns or "", r.name or ""))
        if verb == "list":
            return Response(200, self._list(base, ns, query))
        if verb == "watch":
            return self._watch(base, ns, query)
        if base in ("nodes", "namespaces"):
            raise ApiError(
                405,
                "the emulator does not allow this method on nodes or namespaces; "
                "use KubeEmulator.add_node",
                reason="MethodNotAllowed",
            )
        if verb == "create":
            if r.name:
                raise ApiError(405, "POST on an object", reason="MethodNotAllowed")
            return Response(201, self._create(base, ns or "default", self._json(body), query))
        if verb in ("patch", "update"):
            return Response(
                200,
                self._patch(base, ns or "default", r.name or "", verb, body, content_type, query),
            )
        if verb == "delete":
            return self._delete(base, ns or "default", r.name or "", query, body)
        if verb == "deletecollection":
            return self._delete_collection(base, ns or "default", query, body)
        raise ApiError(405, f"method not allowed: {method}", reason="MethodNotAllowed")

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from e

    def _require_namespace(self, ns: str) -> None:
        if self.store.get("namespaces", "", ns) is None:
            raise ApiError(
                404, f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"}
            )

    def _get(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(resource, "" if resource in CLUSTER_SCOPED else ns, name)
        if obj is None:
            raise not_found(resource, name)
        return obj

    @staticmethod
    def _selectors(query: dict[str, str]) -> tuple[Any, Any]:
        try:
            return (
                parse_label_selector(query.get("labelSelector")),
                parse_field_selector(query.get("fieldSelector")),
            )
        except SelectorError as e:
            raise ApiError(400, str(e)) from e

    def _list(self, resource: str, ns: str | None, query: dict[str, str]) -> dict[str, Any]:
        labels, fields = self._selectors(query)
        limit = _int(query, "limit")
        cont = query.get("continue")
        with self.store.lock:
            rv = self.store.rv
            objs = self.store.list(resource, None if resource in CLUSTER_SCOPED else ns)
        objs = sorted(
            objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )
        objs = [
            o
            for o in objs
            if labels_match(labels, o["metadata"].get("labels") or {}) and fields_match(fields, o)
        ]
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start = (token["ns"], token["name"])
            except (ValueError, KeyError, TypeError, binascii.Error) as e:
                raise ApiError(400, "continue key is not valid") from e
            objs = [
                o
                for o in objs
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
            ]
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and limit > 0 and len(objs) > limit:
            last = objs[limit - 1]["metadata"]
            metadata["continue"] = base64.urlsafe_b64encode(
                json.dumps(
                    {"ns": last.get("namespace", ""), "name": last["name"], "rv": rv}
                ).encode()
            ).decode()
            metadata["remainingItemCount"] = len(objs) - limit
            objs = objs[:limit]
        kind, api_version = KINDS[resource]
        return {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": metadata,
            "items": objs,
        }

    # ------------------------------------------------------------------------------------------
    def _create(self, resource: str, ns: str, obj: Any, query: dict[str, str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object")
        kind, api_version = KINDS[resource]
        if obj.get("kind") not in (None, kind) or obj.get("apiVersion") not in (None, api_version):
            raise ApiError(
                400,
                f"the body is a {obj.get('kind')}/{obj.get('apiVersion')}, "
                f"expected {api_version} {kind}",
            )
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = md
        if md.get("namespace") not in (None, ns):
            raise ApiError(
                400,
                "the namespace of the provided object does not match the "
                "namespace sent on the request",
            )
        md["namespace"] = ns
        for key in (
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            md.pop(key, None)
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + random_suffix()
        dry_run = bool(query.get("dryRun"))
        if resource == "pods":
            validation.validate_pod(obj)
            return self.emu.prepare_pod_and_create(obj, dry_run=dry_run)
        if resource == "jobs":
            validation.validate_job(obj)
            validation.default_job(obj)
            return self.emu.controller.create_job(obj, dry_run=dry_run)
        if resource == "secrets":
            validation.validate_secret(obj)
            data = dict(obj.get("data") or {})
            for k, v in (obj.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(v.encode()).decode()
            for k, v in data.items():
                try:
                    base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise validation.invalid(
                        "Secret",
                        md["name"],
                        [validation.cause(f"data[{k}]", "Invalid value: not valid base64")],
                    ) from e
            obj["data"] = data
            obj.setdefault("type", "Opaque")
        if resource == "events":
            obj.setdefault("involvedObject", {})
        if dry_run:
            return obj
        return self.store.create(resource, obj)

    # ------------------------------------------------------------------------------------------
    def _apply_patch(
        self, current: dict[str, Any], verb: str, body: bytes, content_type: str
    ) -> dict[str, Any]:
        patch = self._json(body)
        ctype = content_type.split(";")[0].strip()
        if verb == "update":
            if not isinstance(patch, dict):
                raise ApiError(400, "the request body must be a JSON object")
            return patch
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "a JSON patch must be a list of operations")
            return json_patch(current, patch)
        if not isinstance(patch, dict):
            raise ApiError(400, "a merge patch must be a JSON object")
        if ctype == "application/merge-patch+json":
            return merge_patch(current, patch)
        if ctype == "application/strategic-merge-patch+json":
            return strategic_merge(current, patch)
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media "
            f"types include: application/json-patch+json, "
            f"application/merge-patch+json, "
            f"application/strategic-merge-patch+json (not {ctype})",
            reason="UnsupportedMediaType",
        )

    def _patch(
        self,
        resource: str,
        ns: str,
        name: str,
        verb: str,
        body: bytes,
        content_type: str,
        query: dict[str, str],
    ) -> dict[str, Any]:
        with self.store.lock:
            current = self._get(resource, ns, name)
            new = self._apply_patch(current, verb, body, content_type)
            if not isinstance(new, dict):
                raise ApiError(422, "the patched object is not an object", reason="Invalid")
            new = copy.deepcopy(new)
            md = new.get("metadata") or {}
            if verb == "update":
                given = md.get("resourceVersion")
                if given and given != current["metadata"]["resourceVersion"]:
                    raise ApiError(
                        409,
                        f'Operation cannot be fulfilled on {resource} "{name}": '
                        "the object has been modified; please apply your changes "
                        "to the latest version and try again",
                        reason="Conflict",
                    )
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "generation",
                "ownerReferences",
            ):
                if key in current["metadata"]:
                    md[key] = current["metadata"][key]
                else:
                    md.pop(key, None)
            new["metadata"] = md
            new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
            if "status" in current:
                new["status"] = current["status"]  # status changes go through /status only
            causes = validation.validate_labels(md.get("labels"), "metadata.labels")
            if causes:
                raise validation.invalid(KINDS[resource][0], name, causes)
            if resource == "jobs":
                validation.validate_job_update(current, new)
                if new["spec"] != current["spec"]:
                    md["generation"] = current["metadata"].get("generation", 1) + 1
            elif resource == "pods":
                self._check_pod_update(current, new)
            elif resource == "secrets":
                validation.validate_secret(new)
            if query.get("dryRun"):
                return new
            return self.store.replace(resource, new)

    @staticmethod
    def _check_pod_update(current: dict[str, Any], new: dict[str, Any]) -> None:
        old_spec, new_spec = copy.deepcopy(current["spec"]), copy.deepcopy(new.get("spec"))
        if not isinstance(new_spec, dict):
            raise validation.invalid(
                "Pod", current["metadata"]["name"], [validation.cause("spec", "Required value")]
            )
        for spec in (old_spec, new_spec):
            spec.pop("activeDeadlineSeconds", None)
            for c in spec.get("containers") or []:
                c.pop("image", None)
        old_tol = old_spec.pop("tolerations", None) or []
        new_tol = new_spec.pop("tolerations", None) or []
        if old_spec != new_spec or any(t not in new_tol for t in old_tol):
            raise validation.invalid(
                "Pod",
                current["metadata"]["name"],
                [
                    validation.cause(
                        "spec",
                        "Forbidden: pod updates may not change fields other than "
                        "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                        "`spec.tolerations` (only additions to existing tolerations)",
                        "FieldValueForbidden",
                    )
                ],
            )

    def _patch_status(
        self, resource: str, ns: str, name: str, verb: str, body: bytes, content_type: str
    ) -> dict[str, Any]:
        with self.store.lock:
            current = self._get(resource, ns, name)
            new = self._apply_patch(current, verb, body, content_type)
            if not isinstance(new, dict):
                raise ApiError(422, "the patched object is not an object", reason="Invalid")
            out = copy.deepcopy(current)
            out["status"] = new.get("status") or {}
            return self.store.replace(resource, out)

    # ------------------------------------------------------------------------------------------
    def _delete_options(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if body and body.strip():
            parsed = self._json(body)
            if parsed is not None and not isinstance(parsed, dict):
                raise ApiError(400, "delete options must be an object")
            opts.update(parsed or {})
        if "propagationPolicy" in query:
            opts["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            opts["gracePeriodSeconds"] = _int(query, "gracePeriodSeconds")
        if opts.get("orphanDependents") is not None and "propagationPolicy" not in opts:
            opts["propagationPolicy"] = "Orphan" if opts["orphanDependents"] else "Background"
        policy = opts.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise validation.invalid(
                "DeleteOptions",
                "",
                [
                    validation.cause(
                        "propagationPolicy",
                        f'Unsupported value: "{policy}"',
                        "FieldValueNotSupported",
                    )
                ],
            )
        grace = opts.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or grace < 0):
            raise ApiError(400, "gracePeriodSeconds must be a non-negative integer")
        precond = opts.get("preconditions") or {}
        opts["preconditions"] = precond
        return opts

    def _delete(
        self, resource: str, ns: str, name: str, query: dict[str, str], body: bytes
    ) -> Response:
        opts = self._delete_options(query, body)
        with self.store.lock:
            current = self._get(resource, ns, name)
            precond = opts["preconditions"]
            for key in ("uid", "resourceVersion"):
                if precond.get(key) and precond[key] != current["metadata"].get(key):
                    raise ApiError(
                        409,
                        f"Precondition failed: {key} in precondition: "
                        f"{precond[key]}, {key} in object meta: "
                        f"{current['metadata'].get(key)}",
                        reason="Conflict",
                    )
            if query.get("dryRun"):
                return Response(200, current)
            result = self.delete_object(resource, current, opts)
        return Response(200, result)

    def delete_object(
        self, resource: str, obj: dict[str, Any], opts: dict[str, Any]
    ) -> dict[str, Any]:
        """Delete (or start deleting) an object; returns what the API answers."""
        md = obj["metadata"]
        ns, name = md.get("namespace", ""), md["name"]
        if resource == "pods":
            # a Pod DELETE answers the Pod: terminating, or its last state once removed
            pending = self.emu.kubelet.delete_pod(obj, opts.get("gracePeriodSeconds"))
            return pending if pending is not None else obj
        if resource == "jobs":
            pending = self.emu.controller.delete_job(obj, opts.get("propagationPolicy"))
            if pending is not None:
                return pending
        else:
            self.store.remove(resource, ns, name)
        group = "batch" if resource == "jobs" else ""
        return status_body(200, "", reason="") | {
            "details": {"name": name, "group": group, "kind": resource, "uid": md["uid"]},
        }

    def _delete_collection(
        self, resource: str, ns: str, query: dict[str, str], body: bytes
    ) -> Response:
        opts = self._delete_options(query, body)
        labels, fields = self._selectors(query)
        with self.store.lock:
            for obj in self.store.list(resource, ns):
                if labels_match(labels, obj["metadata"].get("labels") or {}) and fields_match(
                    fields, obj
                ):
                    self.delete_object(resource, obj, opts)
        return Response(200, status_body(200, "", reason="") | {"details": {"kind": resource}})

    # ------------------------------------------------------------------------------------------
    def _log(self, ns: str, name: str, query: dict[str, str]) -> Response:
        pod = self._get("pods", ns, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or containers[0]
        if container not in containers:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        text = self.emu.kubelet.read_log(pod)
        if text is None:
            reason = "ContainerCreating"
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting:
                    reason = waiting.get("reason", reason)
            raise ApiError(
                400, f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        tail = _int(query, "tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        limit = _int(query, "limitBytes")
        if limit is not None:
            text = text.encode()[:limit].decode(errors="ignore")
        return Response(200, text)

    # ------------------------------------------------------------------------------------------
    def _watch(self, resource: str, ns: str | None, query: dict[str, str]) -> Response:
        labels, fields = self._selectors(query)
        ns_filter = None if resource in CLUSTER_SCOPED else ns
        timeout = _int(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        rv_text = query.get("resourceVersion") or ""
        store = self.store
        kind, api_version = KINDS[resource]

        def matches(obj: dict[str, Any]) -> bool:
            md = obj["metadata"]
            if ns_filter is not None and md.get("namespace", "") != ns_filter:
                return False
            return labels_match(labels, md.get("labels") or {}) and fields_match(fields, obj)

        initial: list[dict[str, Any]] = []
        with store.lock:
            if rv_text in ("", "0"):
                cursor = store.rv
                initial = [o for o in store.list(resource, ns_filter) if matches(o)]
                initial.sort(key=lambda o: int(o["metadata"]["resourceVersion"]))
            else:
                try:
                    cursor = int(rv_text)
                except ValueError as e:
                    raise ApiError(400, f"invalid resourceVersion {rv_text!r}") from e
                if cursor < store.floor or cursor > store.rv + 1_000_000:
                    gone = ApiError(
                        410, f"too old resource version: {cursor} ({store.floor})", reason="Expired"
                    )
                    if not store.gone_as_event:
                        raise gone
                    return Response(
                        200,
                        iter([self._line({"type": "ERROR", "object": gone.body()})]),
                        {"Content-Type": "application/json"},
                    )
            generation = store.cut_generation

        def stream() -> Iterator[bytes]:
            nonlocal cursor
            for obj in initial:
                yield self._line({"type": "ADDED", "object": obj})
            end = time.monotonic() + timeout if timeout else None
            interval = self.emu.bookmark_interval
            next_bookmark = time.monotonic() + interval
            while True:
                out: list[bytes] = []
                with store.lock:
                    while True:
                        if self.emu.stopping or store.cut_generation != generation:
                            return
                        now = time.monotonic()
                        if end is not None and now >= end:
                            return
                        if cursor < store.floor:
                            out.append(
                                self._line(
                                    {
                                        "type": "ERROR",
                                        "object": status_body(
                                            410,
                                            f"too old resource version: {cursor} ({store.floor})",
                                            reason="Expired",
                                        ),
                                    }
                                )
                            )
                            break
                        events = store.events_since(cursor)
                        if events or (bookmarks and now >= next_bookmark):
                            break
                        waits = [next_bookmark - now if bookmarks else 1.0]
                        if end is not None:
                            waits.append(end - now)
                        store.changed.wait(max(0.01, min(waits)))
                    if not out:
                        for rv, res, type_, obj in events:
                            if res == resource and matches(obj):
                                out.append(self._line({"type": type_, "object": obj}))
                            cursor = rv
                        if bookmarks and time.monotonic() >= next_bookmark:
                            cursor = max(cursor, store.rv)
                            out.append(
                                self._line(
                                    {
                                        "type": "BOOKMARK",
                                        "object": {
                                            "kind": kind,
                                            "apiVersion": api_version,
                                            "metadata": {"resourceVersion": str(cursor)},
                                        },
                                    }
                                )
                            )
                            next_bookmark = time.monotonic() + interval
                yield from out
                if out and out[-1].startswith(b'{"type": "ERROR"'):
                    return

        return Response(200, stream(), {"Content-Type": "application/json"})

    @staticmethod
    def _line(event: dict[str, Any]) -> bytes:
        return json.dumps(event).encode() + b"\n"
