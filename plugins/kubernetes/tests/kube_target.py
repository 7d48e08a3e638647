"""Where the backend's tests run: the loopback emulator, or a real cluster when KUBECONFIG is set.

`target` gives a `Target`: its kubeconfig, whether it is the emulator (`emu`, for counting
requests and injecting faults; tests that need it skip on a real cluster, saying why), and the
settings the backend's tests use. On a real cluster the settings also read the environment
(`JOBFLEET_KUBERNETES_IMAGE`, `…_NAMESPACE`, `…_CHANNEL_ADDRESS`: the pods must reach the
test's channel, so bind it where they can with `JOBFLEET_TEST_CHANNEL_BIND`).

Test modules load this file by path (test directories are not packages) and take the fixture
into their namespace: `target = kube_target.target`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobfleet.core.settings import resolve_settings
from jobfleet.plugins.kubernetes.settings import KubernetesSettings

# Quick settings for tests: no rate limit to speak of, short kill grace and relists.
TEST_VALUES: dict[str, Any] = {
    "max_api_calls_per_second": 1000.0,
    "kill_grace": 2.0,
    "kill_wait": 30.0,
    "ttl_after_finished": 600,
    "default_memory": "256M",
}


@dataclass
class Target:
    kubeconfig: Path
    emu: Any | None  # the KubeEmulator, None on a real cluster

    @property
    def emulated(self) -> bool:
        return self.emu is not None

    def require_emulator(self, why: str) -> Any:
        """The emulator, or a skip on a real cluster naming why the test needs it."""
        if self.emu is None:
            pytest.skip(f"needs the emulator ({why}); KUBECONFIG points at a real cluster")
        return self.emu

    def settings(self, **values: Any) -> KubernetesSettings:
        given = {**TEST_VALUES, "kubeconfig": self.kubeconfig, **values}
        environ = dict(os.environ) if self.emu is None else {}
        settings: KubernetesSettings = resolve_settings(
            "kubernetes", KubernetesSettings, given, environ
        )
        return settings

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind` in the namespace (through the emulator, or a list call)."""
        if self.emu is not None:
            return list(self.emu.objects(kind))
        from kubernetes import config

        client = config.new_client_from_config(config_file=str(self.kubeconfig))
        namespace = self.settings().namespace or "default"
        path = {"jobs": f"/apis/batch/v1/namespaces/{namespace}/jobs"}.get(
            kind, f"/api/v1/namespaces/{namespace}/{kind}"
        )
        import json

        _m, url, headers, _b, _p = client.param_serialize(
            method="GET", resource_path=path, auth_settings=["BearerToken"]
        )
        response = client.rest_client.pool_manager.request("GET", url, headers=headers)
        return list(json.loads(response.data).get("items") or [])


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    real = os.environ.get("KUBECONFIG")
    if real:
        yield Target(Path(real), None)
        return
    emu = request.getfixturevalue("kube_emulator")
    yield Target(Path(emu.kubeconfig), emu)
