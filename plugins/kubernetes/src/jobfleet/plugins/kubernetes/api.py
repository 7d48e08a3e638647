"""The API server as the backend speaks to it: raw JSON through the official client.

The official `kubernetes` client loads the configuration (kubeconfig, context, in-cluster
service account), authenticates and keeps the connection pool; this module sends requests
through its `ApiClient` and reads the answers as plain dicts. The client's own model classes
validate every field of every object, which costs more than the rest of a status round for
thousands of pods, and cannot carry a watch's `ERROR` event whose object is a `Status`.

Every call goes through `KubeApi.call`: a token bucket (`max_api_calls_per_second`), retries
with backoff and jitter for 429 (honouring `Retry-After`), 5xx and lost connections, and a
clear `BackendError` at once for 401, 403 (naming the verb and resource the service account
lacks) and 422 (naming the object).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jobfleet.core.errors import BackendError

log = logging.getLogger(__name__)

_IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_MAX_BACKOFF = 30.0


class KubeApiError(BackendError):
    """An API call that failed for good; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = dict(body or {})


@dataclass(frozen=True)
class Resource:
    """A kind of object: its API path prefix and plural name (as RBAC names it)."""

    group_path: str  # "/api/v1" or "/apis/batch/v1"
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str = "") -> str:
        parts = [self.group_path]
        if self.namespaced:
            parts.append(f"namespaces/{quote(namespace or 'default', safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
        if sub:
            parts.append(sub)
        return "/".join(parts)


JOBS = Resource("/apis/batch/v1", "jobs")
PODS = Resource("/api/v1", "pods")
SECRETS = Resource("/api/v1", "secrets")
NODES = Resource("/api/v1", "nodes", namespaced=False)


class TokenBucket:
    """At most `rate` calls per second on average, bursts of up to `rate` (at least 1)."""

    def __init__(self, rate: float, clock: Any = time.monotonic, sleep: Any = time.sleep) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1 - 1e-9:  # a float short of 1 after its wait is 1
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                wait = max(1e-3, (1 - self._tokens) / self.rate)
            self._sleep(wait)


class KubeApi:
    """One connection to an API server, through an official-client `ApiClient`."""

    def __init__(
        self,
        api_client: Any,
        *,
        max_calls_per_second: float = 20.0,
        retries: int = 6,
        request_timeout: float = 30.0,
        sleep: Any = time.sleep,
    ) -> None:
        self.client = api_client
        self.bucket = TokenBucket(max_calls_per_second, sleep=sleep)
        self.retries = retries
        self.request_timeout = request_timeout
        self.calls: Counter[tuple[str, str]] = Counter()
        """Calls made, by (verb, resource) as RBAC names them (retries counted)."""
        self._sleep = sleep
        self._stopping = threading.Event()

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        **options: Any,
    ) -> tuple[KubeApi, str]:
        """An API from the kubeconfig (or the pod's service account), and its namespace."""
        from kubernetes import client, config  # the heavy import, only when connecting

        configuration = client.Configuration()
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                try:
                    with open(_IN_CLUSTER_NAMESPACE) as handle:
                        namespace = handle.read().strip() or "default"
                except OSError:
                    namespace = "default"
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
                namespace = _context_namespace(kubeconfig, context)
        except Exception as exc:  # the loaders raise ConfigException, OSError, YAML errors…
            where = "the pod's service account" if in_cluster else (kubeconfig or "$KUBECONFIG")
            raise BackendError(
                f"Cannot load the Kubernetes configuration from {where}"
                f"{f' (context {context!r})' if context else ''}: {exc}"
            ) from None
        configuration.retries = False  # retried here, with backoff, and counted
        return cls(client.ApiClient(configuration), **options), namespace

    def close(self) -> None:
        self._stopping.set()
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:  # closing a pool must not fail a stop()
                log.debug("closing the API client failed: %s", exc)

    # -- calls ----------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        resource: str,
        what: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        ok_missing: bool = False,
    ) -> dict[str, Any]:
        """Send one request and return its JSON answer (retrying what may be retried).

        `what` names the object for messages ("the Job jf-…"). With `ok_missing`, a 404
        answers `{}` instead of raising.
        """
        attempt = 0
        while True:
            try:
                status, headers, data = self._send(
                    method, path, verb, resource, query, body, content_type
                )
            except _NoAnswer as exc:
                status, headers, data = 0, {}, str(exc).encode()
            if 200 <= status < 300:
                return _json(data)
            if status == 404 and ok_missing:
                return {}
            delay = self._retry_delay(status, headers, attempt)
            if delay is None:
                raise _error(status, data, verb, resource, what)
            attempt += 1
            log.info(
                "Kubernetes %s %s answered %s; retrying in %.1f s",
                verb,
                resource,
                status or "nothing",
                delay,
            )
            self._sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        verb: str,
        resource: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        *,
        stream: bool = False,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], Any]:
        self.bucket.take()
        self.calls[(verb, resource)] += 1
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _method, url, headers, _body, _post = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        payload = json.dumps(body) if body is not None else None
        try:
            response = self.client.rest_client.pool_manager.request(
                method,
                url,
                body=payload,
                headers=headers,
                preload_content=not stream,
                timeout=timeout or self.request_timeout,
                retries=False,
            )
        except Exception as exc:  # urllib3's connection, timeout and protocol errors
            raise _NoAnswer(f"{type(exc).__name__}: {exc}") from None
        if stream:
            return response.status, response.headers, response
        return response.status, response.headers, response.data

    def _retry_delay(self, status: int, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds before the next try, or None when the error is final."""
        retryable = status in (0, 429) or 500 <= status < 600
        if not retryable or attempt >= self.retries or self._stopping.is_set():
            return None
        backoff: float = min(_MAX_BACKOFF, 0.2 * 2.0**attempt) * (0.5 + random.random())  # noqa: S311
        if status == 429 or status == 503:
            after = _retry_after(headers)
            if after is not None:
                return min(_MAX_BACKOFF, after) + random.random() * 0.1  # noqa: S311
        return backoff

    # -- watches --------------------------------------------------------------------------------

    def watch(
        self, resource: Resource, namespace: str, query: Mapping[str, Any], timeout: float
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request, decoded; raises KubeApiError on a failed start
        (status 410 included), ends when the server closes the stream."""
        full = {**query, "watch": "true", "allowWatchBookmarks": "true"}
        path = resource.path(namespace)
        status, _headers, response = self._start_watch(path, resource.plural, full, timeout)
        if status != 200:
            data = response.data if hasattr(response, "data") else b""
            response.release_conn()
            raise _error(status, data, "watch", resource.plural, f"the watch of {resource.plural}")
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        finally:
            response.release_conn()

    def _start_watch(
        self, path: str, plural: str, query: Mapping[str, Any], timeout: float
    ) -> tuple[int, Mapping[str, str], Any]:
        attempt = 0
        while True:
            try:
                status, headers, response = self._send(
                    "GET",
                    path,
                    "watch",
                    plural,
                    query,
                    None,
                    "application/json",
                    stream=True,
                    timeout=timeout + 10,
                )
            except _NoAnswer as exc:
                status, headers, response = 0, {}, _Closed(str(exc))
            if status == 200:
                return status, headers, response
            delay = self._retry_delay(status, headers, attempt)
            if delay is None:
                return status, headers, response
            response.release_conn()
            attempt += 1
            self._sleep(delay)


class _NoAnswer(Exception):
    """The request got no HTTP answer (connection refused, reset, timed out)."""


class _Closed:
    def __init__(self, reason: str) -> None:
        self.data = reason.encode()

    def release_conn(self) -> None:
        pass


def _json(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    value = json.loads(data)
    return value if isinstance(value, dict) else {"value": value}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    text: str | None = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(text)) if text is not None else None
    except ValueError:
        return None


def _error(status: int, data: Any, verb: str, resource: str, what: str) -> KubeApiError:
    """The BackendError for a final failure, in words a user can act on."""
    try:
        body = _json(bytes(data)) if isinstance(data, bytes | bytearray) else {}
    except ValueError:
        body = {}
    detail = str(body.get("message") or (data[:300].decode(errors="replace") if data else ""))
    if status == 0:
        message = f"The Kubernetes API server did not answer ({verb} {resource}, {what}): {detail}"
    elif status == 401:
        message = (
            f"The Kubernetes API server refused the credentials (401) for {verb} {resource} "
            f"({what}): check the kubeconfig's user or token. {detail}"
        )
    elif status == 403:
        message = (
            f"Kubernetes forbids {what} (403): the service account lacks the permission "
            f"'{verb}' on '{resource}'; grant it in a Role (see docs/kubernetes.md). {detail}"
        )
    elif status == 422:
        message = f"Kubernetes refused {what} as invalid (422): {detail}"
    else:
        message = f"Kubernetes answered {status} to {verb} {resource} ({what}): {detail}"
    return KubeApiError(message.strip(), status, body)


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except Exception:
        return "default"
    chosen = current
    for entry in contexts or []:
        if context is not None and entry.get("name") == context:
            chosen = entry
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"
