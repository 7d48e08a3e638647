"""`jobfleet run --cluster kubernetes` end to end: the host, the http channel, the emulator."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

JOBFLEET = shutil.which("jobfleet")


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kube_target = _load("kube_target")
target = kube_target.target


def jobfleet(cwd: Path, target: Any, *args: str) -> subprocess.CompletedProcess[str]:
    assert JOBFLEET, "the jobfleet console script is not installed in this environment"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBFLEET_")}
    if target.emulated:
        environ["JOBFLEET_KUBERNETES_KUBECONFIG"] = str(target.kubeconfig)
        environ["JOBFLEET_KUBERNETES_KILL_GRACE"] = "2"
    else:  # a real cluster: its image, namespace and channel address come from the caller
        environ.update({k: v for k, v in os.environ.items() if k.startswith("JOBFLEET_")})
    return subprocess.run(
        [JOBFLEET, "run", "--cluster", "kubernetes", *args, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environ,
        check=False,
        timeout=600,
    )


@pytest.mark.slow
def test_a_50_task_array_runs_end_to_end_over_the_http_channel(target: Any, tmp_path: Path) -> None:
    tasks = {
        "defaults": {"resources": {"cores": 0.1, "memory": "200M", "runtime": "5m"}},
        "tasks": [{"name": f"t{n}", "command": f"echo task {n}"} for n in range(50)],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    if target.emulated:
        target.emu.reset_counts()
    result = jobfleet(tmp_path, target, "tasks.json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "done"
    assert {task["task_state"] for task in summary["tasks"]} == {"done"}
    assert len(summary["tasks"]) == 50
    if target.emulated:
        emu = target.emu
        assert emu.request_count(verb="create", resource="jobs") == 1  # one Indexed Job
        assert emu.objects("jobs") == []  # stop() at the end of the run
        assert emu.objects("secrets") == []
        token_free = emu.all_text()
        assert "JOBFLEET_CHANNEL_TOKEN=" not in token_free


@pytest.mark.slow
def test_out_of_memory_is_retried_with_more_memory_until_done(target: Any, tmp_path: Path) -> None:
    emu = target.require_emulator("its kubelet's memory cgroup is what kills the pod")
    if not emu.enforces_memory:
        pytest.skip("the emulator has no writable v1 memory cgroup here (memory.limit_in_bytes)")
    hog = (
        f"{sys.executable} -c \"b = bytearray(130 * 2**20); b[::4096] = b'x' * len(b[::4096]);"
        " print('used', len(b) >> 20, 'MiB')\""
    )
    tasks = {"tasks": [{"name": "hungry", "command": hog, "resources": {"memory": "100M"}}]}
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    result = jobfleet(tmp_path, target, "tasks.json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    (task,) = summary["tasks"]
    assert task["task_state"] == "done"
    assert task["attempts"] == 2
    events = subprocess.run(
        [str(JOBFLEET), "events", "1"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert "memory 100M → 150M" in events.stdout, events.stdout
