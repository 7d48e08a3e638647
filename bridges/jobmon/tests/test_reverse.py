"""The reverse direction: Jobmon's own multiprocess plugin running a task file under jobfleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jobmon.plugins.multiprocess", reason="needs the `jobmon` dependency group")

pytestmark = pytest.mark.slow


def test_jobmons_multiprocess_plugin_runs_ten_tasks_under_jobfleet_run(tmp_path: Path) -> None:
    lines = ["defaults:", "  resources: {cores: 1, memory: 1G, runtime: 60}", "tasks:"]
    lines += [f"  - {{name: t{i}, command: 'echo task {i}'}}" for i in range(1, 11)]
    # One that fails once, to show retries go through Jobmon's plugin too.
    marker = tmp_path / "failed-once"
    lines.append(
        f"  - {{name: flaky, command: 'test -e {marker} || {{ touch {marker}; exit 3; }}'}}"
    )
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("\n".join(lines) + "\n")
    bin_dir = str(Path(sys.executable).parent)
    # Jobmon's plugin insists on finding Jobmon's worker on PATH (though it is not used here).
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("JOBFLEET_LEDGER", None)
    done = subprocess.run(
        [
            str(Path(bin_dir) / "jobfleet"),
            "run",
            "--ledger",
            str(tmp_path / "ledger.db"),
            "--cluster",
            "jobmon_multiprocess",
            "--new-queue",
            "--json",
            str(tasks),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["task_counts"] == {"done": 11}, summary
    attempts = {task["name"]: task["attempts"] for task in summary["tasks"]}
    assert attempts == {**{f"t{i}": 1 for i in range(1, 11)}, "flaky": 2}
