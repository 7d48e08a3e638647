"""`DistributorService`: the service's life cycle, and the round that runs the steps in order."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from jobfleet.core.base_distributor import BaseClusterDistributor
from jobfleet.core.channel import Channel, EventCursor, open_channel
from jobfleet.core.cluster_protocol import ClusterDistributor, ClusterQueue
from jobfleet.core.host.ledger import DEFAULT_LEASE, FINAL_RUN_STATUSES, Ledger, Run
from jobfleet.core.host.queues import queue_objects
from jobfleet.core.host.runs import ChannelOptions, ServiceOptions
from jobfleet.core.host.service.context import RunContext, ServiceError
from jobfleet.core.host.service.kills import handle_kills
from jobfleet.core.host.service.lease import (
    StoredRun,
    claim_run,
    give_up,
    owner_token,
    renew_if_due,
)
from jobfleet.core.host.service.progress import Progress, take_stock
from jobfleet.core.host.service.recovery import recover_unsubmitted
from jobfleet.core.host.service.reports import ingest_events
from jobfleet.core.host.service.status import query_backend
from jobfleet.core.host.service.submission import submit_queued
from jobfleet.core.host.service.triage import triage
from jobfleet.core.host.service.withdrawal import withdraw_all_ended, withdraw_ended
from jobfleet.core.plugins import PluginRegistry, default_registry
from jobfleet.core.private import make_private_dirs


class DistributorService:
    """Owns one run (through its lease) and drives it through its backend.

    Use `start()`, then `round()` until `Progress.status` is final (or `run_until_done()`),
    then `close()`. A service that crashed is replaced by a new one on the same run
    (`--resume`): `start()` reconciles the ledger with the backend and the channel.
    """

    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        *,
        registry: PluginRegistry | None = None,
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.registry = registry or default_registry()
        self.environ = dict(os.environ if environ is None else environ)
        self._run = RunContext(ledger, run_id, owner or owner_token(), lease)
        self._stop = threading.Event()
        self._final = False

    # -- the run's state, which the steps share through the context -----------------------------

    @property
    def ledger(self) -> Ledger:
        return self._run.ledger

    @property
    def run_id(self) -> int:
        return self._run.run_id

    @property
    def owner(self) -> str:
        return self._run.owner

    @property
    def lease(self) -> timedelta:
        return self._run.lease

    @property
    def options(self) -> ServiceOptions:
        return self._run.options

    @property
    def distributor(self) -> ClusterDistributor | None:
        return self._run.distributor

    @property
    def channel(self) -> Channel | None:
        return self._run.channel

    @property
    def queues(self) -> dict[str, ClusterQueue]:
        return self._run.queues

    @property
    def _cursor(self) -> EventCursor | None:
        return self._run.cursor

    @_cursor.setter
    def _cursor(self, cursor: EventCursor | None) -> None:
        # Tests rewind it to read every report again, as after a crash.
        self._run.cursor = cursor

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Take the run's lease, connect to the backend, and reconcile after a crash."""
        stored = claim_run(self._run)
        if not stored.host_url:
            raise ServiceError(f"Run {self.run_id} has no channel; it was not made by create_run.")
        self._connect(stored, stored.host_url)
        recover_unsubmitted(self._run)
        withdraw_all_ended(self._run)

    def _connect(self, stored: StoredRun, host_url: str) -> None:
        """The run's options, the backend's queue objects, the channel and the distributor."""
        run = self._run
        run.options = ServiceOptions.from_dict(stored.options.get("service", {}))
        plugin = self.registry.get_cluster(stored.cluster_type)
        settings = plugin.settings(stored.options.get("cluster_settings", {}), self.environ)
        run.queues = queue_objects(plugin, stored.queue_rows, settings)
        run.queue_rows = {name: row.id for name, row in stored.queue_rows.items()}
        run.channel = open_channel(host_url, create=True)
        kwargs: dict[str, Any] = {"host_url": host_url}
        channel_options = ChannelOptions.from_dict(stored.options.get("channel", {}))
        if channel_options.transport == "http":
            kwargs["host_url"], kwargs["channel_token"] = self._serve(channel_options)
        if settings is not None:
            kwargs["settings"] = settings
        if run.work_dir and issubclass(plugin.distributor_class, BaseClusterDistributor):
            # Plugins written against Jobmon's protocol alone never see this parameter.
            kwargs["state_dir"] = make_private_dirs(os.path.join(run.work_dir, "distributor"))
        run.distributor = plugin.distributor_class(stored.cluster_name, **kwargs)
        run.distributor.start()
        autoscale = stored.options.get("autoscale")
        if autoscale:
            from jobfleet.core.host.autoscale import AutoscaleOptions, RunScaler

            options = AutoscaleOptions.from_dict(autoscale)
            run.scaler = RunScaler(
                self.ledger,
                self.run_id,
                options,
                self.registry.get_provisioner(options.provisioner),
                run.distributor,
                cluster_name=f"{stored.cluster_name}-run-{self.run_id}",
            )

    def _serve(self, options: ChannelOptions) -> tuple[str, str]:
        """Serve the run's file channel over HTTP(S): (its URL, its token).

        The first service of a run binds the port asked for (0: any free port) and stores the
        one taken with the run, so that a resumed service serves the same URL, and wrappers
        still running keep reporting to it.
        """
        from jobfleet.core.channel import FileChannel
        from jobfleet.core.host.channel_server import serve_channel

        run = self._run
        channel = run.channel
        assert isinstance(channel, FileChannel)
        key = os.path.basename(run.work_dir or "") or f"run-{run.run_id}-{run.run_token}"
        served = serve_channel(
            channel,
            key,
            bind=options.bind,
            address=options.address,
            tls_cert=options.tls_cert,
            tls_key=options.tls_key,
        )
        run.served_channel = served
        if served.bind != options.bind:
            stored = options.to_dict() | {"bind": served.bind}
            with self.ledger.session() as session:
                row = session.get_one(Run, self.run_id)
                row.options = {**row.options, "channel": stored}
        return served.url, served.token

    def close(self) -> None:
        """Stop the backend connection and give the run up (a clean stop, not a kill).

        When the run is over and autoscaled, its nodes are terminated first."""
        if self._run.scaler is not None and self._final:
            self._run.scaler.release()
        self._run.scaler = None
        if self._run.channel is not None:
            withdraw_ended(self._run)
        if self._run.distributor is not None:
            self._run.distributor.stop()
            self._run.distributor = None
        if self._run.served_channel is not None:
            self._run.served_channel.close()
            self._run.served_channel = None
        if self._run.channel is not None:
            self._run.channel.close()
            self._run.channel = None
        give_up(self._run)

    def kill_requested(self) -> bool:
        """Carry out the kill requests in the ledger, and nothing else (no submission)."""
        changed = handle_kills(self._run)
        withdraw_ended(self._run)
        return changed

    def request_stop(self) -> None:
        """Make `run_until_done` return after the current round (from another thread or a
        signal handler)."""
        self._stop.set()

    def clear_stop(self) -> None:
        """Let `run_until_done` run rounds again after `request_stop`."""
        self._stop.clear()

    def run_until_done(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Run rounds until the run is over (or `request_stop`); pauses grow while idle."""
        pause = self.options.poll_interval
        while True:
            progress = self.round()
            if on_progress is not None:
                on_progress(progress)
            if progress.status in FINAL_RUN_STATUSES or self._stop.is_set():
                return progress
            pause = (
                self.options.poll_interval
                if progress.changed
                else min(pause * 1.5, self.options.max_poll_interval)
            )
            self._stop.wait(pause)

    # -- one round ------------------------------------------------------------------------------

    def round(self) -> Progress:
        """One pass of the steps, in the order of the package docstring; where the run stands."""
        run = self._run
        renew_if_due(run)
        changed = handle_kills(run)
        view = query_backend(run)
        changed |= ingest_events(run)
        changed |= triage(run, view)
        changed |= submit_queued(run)
        withdraw_ended(run)
        if run.scaler is not None:
            run.scaler.step()  # at its own interval; not a change that speeds the rounds up
        progress = take_stock(run, changed)
        self._final = progress.status in FINAL_RUN_STATUSES
        return progress
