"""`jobfleet ui` page times on a large run, against `jobfleet status` on the same ledger.

    uv run python bench/ui.py [--instances 1000000] [--quick] [--ledger PATH] [--keep DIR]
                              [--rounds 5] [--json]

A SQLite ledger with one run of `--instances` task instances is built by bench/host.py's
`generate` (bulk inserts: ~95% of tasks done at their first attempt, 5% retried after an E,
0.5% running, 0.5% queued; a real run's usage, exit records and paths), or `--ledger PATH`
reuses one it kept (`--keep DIR`). Then, in one process and one run:

- the baseline: `jobfleet status RUN --json` in process, step by step as bench/host.py times
  it (`Ledger.open`, a read session, the run, its counts, its first 20 tasks, the JSON), the
  median of `--rounds`;
- the ui, a real uvicorn server in a thread (what `jobfleet ui` runs) opened read-only on the
  same ledger, asked over HTTP on loopback with urllib: the runs page, the run page, the
  first tasks page, and the tasks page sorted by peak memory (which ranks every task). Each
  page once cold (a new server: its run cache empty, the ledger's files dropped from the page
  cache) and then the median of `--rounds` warm requests (a running run's heavy sections are
  reused for 3 s between requests; warm rounds are spaced past that, so they are read anew).

Printed: each page's time and bytes, and its ratio to the status baseline. Nothing here is
asserted by a test; the machine is shared and noisy, so the ratios mean more than the times.
`--quick` is 50,000 instances.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import host  # bench/host.py: the large-run builder and the status baseline

from jobfleet.core.host.ledger import Ledger
from jobfleet.core.host.ui import UiServer
from jobfleet.core.host.ui.app import LIVE_CACHE_SECONDS

PAGES = {
    "runs page": "/",
    "run page": "/runs/{run}",
    "first tasks page": "/runs/{run}/tasks",
    "tasks by peak memory": "/runs/{run}/tasks?sort=maxrss&order=desc",
}


def get(url: str) -> tuple[float, int]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as answer:  # noqa: S310 (loopback, ours)
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"{url}: HTTP {answer.status}")
    return time.perf_counter() - began, len(body)


def page_times(path: Path, run_id: int, rounds: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, template in PAGES.items():
        host.evict(path)
        with Ledger.open(path, read_only=True) as ledger:
            server = UiServer(ledger, bind="127.0.0.1:0").start()
            try:
                url = f"http://127.0.0.1:{server.port}" + template.format(run=run_id)
                cold, size = get(url)
                warm = []
                for _ in range(rounds):
                    if name == "run page":
                        time.sleep(LIVE_CACHE_SECONDS)  # past the cache: the page read anew
                    warm.append(get(url)[0])
                cached = get(url)[0] if name == "run page" else None
            finally:
                server.stop()
        results[name] = {"cold": cold, "warm": statistics.median(warm), "bytes": size,
                         "cached": cached}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 instances")
    parser.add_argument("--ledger", type=Path, help="reuse a ledger kept by --keep")
    parser.add_argument("--keep", type=Path, help="keep the generated ledger as DIR/ledger.db")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    instances = 50_000 if args.quick else args.instances
    with tempfile.TemporaryDirectory(prefix="jobfleet-bench-ui-") as scratch:
        if args.ledger is not None:
            path, run_id = args.ledger, 1
        else:
            path = (args.keep or Path(scratch)) / "ledger.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            run_id = host.generate(path, instances, 1).run_id
        with Ledger.open(path):  # migrated once, before anything is timed
            pass
        host.evict(path)
        status_cold = host.total(host.status_once(path, str(run_id))[0])
        status_warm = statistics.median(
            host.total(host.status_once(path, str(run_id))[0]) for _ in range(args.rounds)
        )
        pages = page_times(path, run_id, args.rounds)
    report = {
        "ledger": str(path),
        "instances": instances if args.ledger is None else None,
        "status_cold_s": status_cold,
        "status_warm_s": status_warm,
        "pages": pages,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"ledger {path} (run {run_id})")
    print(f"baseline `jobfleet status {run_id} --json` in process: cold {1000 * status_cold:.0f}"
          f" ms, warm median {1000 * status_warm:.0f} ms")  # fmt: skip
    print(f"{'page':<22} {'cold ms':>8} {'× status':>9} {'warm ms':>8} {'× status':>9} {'KiB':>7}")
    for name, times in pages.items():
        print(
            f"{name:<22} {1000 * times['cold']:>8.0f} {times['cold'] / status_cold:>9.2f} "
            f"{1000 * times['warm']:>8.0f} {times['warm'] / status_warm:>9.2f} "
            f"{times['bytes'] / 1024:>7.0f}"
        )
        if times["cached"] is not None:
            print(f"{'  (from its cache)':<22} {'':>8} {'':>9} {1000 * times['cached']:>8.0f} "
                  f"{times['cached'] / status_warm:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
