"""The distributor service: drives one run through a backend until every task is over.

Each round, in this order (each step its own short transaction, so a crash between two steps
leaves a ledger that the next service can pick up — see docs/host.md):

1. renew the run's lease (another service cannot take a run whose owner is alive): `lease`;
2. carry out kill requests (`jobfleet kill` writes them to the ledger): `kills`;
3. ask the backend once which of our launched instances it still has: `status`;
4. ingest the worker reports that arrived on the channel (running, heartbeats, final
   reports): `reports`;
5. triage what the backend no longer has, or what went silent, through
   get_remote_exit_info: `triage`;
6. submit queued instances, grouped into arrays of identical resources: `submission`.

Attempts that end unsuccessfully are followed, in the same transaction, by their retry or by
the task's end (`retries`, which asks retry.py). Reports are applied by compare-and-set, so
reading a report twice (after a crash, from an older cursor) changes nothing. `recovery`
settles what a crashed service left half submitted; `progress` tells where the run stands.
The steps share the run's state through `context.RunContext`; `core.DistributorService`
owns it and runs the steps.
"""

from jobfleet.core.host.service.context import ServiceError
from jobfleet.core.host.service.core import DistributorService
from jobfleet.core.host.service.lease import check_claimable
from jobfleet.core.host.service.progress import Progress

__all__ = ["DistributorService", "Progress", "ServiceError", "check_claimable"]
