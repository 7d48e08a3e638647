"""Conformance: the distributor contracts of DESIGN §3 that the protocol alone can check.

Later issues add the contracts that need real commands and a host (running, killing running
work, exhaustive reporting); they arrive as more test methods here, so every backend that
subclasses `DistributorTests` runs them without changing its own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobfleet.core.cluster_protocol import ClusterDistributor
from jobfleet.core.exit_info import ErrorState, RemoteExitInfo
from jobfleet.core.testing.capabilities import Capabilities

# Ids no backend hands out: odd shapes must be answered, not crash the backend (or reach a shell).
UNKNOWN_IDS = ("jobfleet-no-such-id", "", "../../etc/passwd", "1; touch /tmp/pwned", "9" * 300)


def _state_and_message(info: Any) -> tuple[ErrorState, str]:
    """Read a `RemoteExitInfo` or a Jobmon-style `(state, message)` pair."""
    state, message = info
    return ErrorState(state), message


class DistributorTests:
    """Subclass and override `make_distributor`; set `capabilities` for what it cannot do."""

    capabilities = Capabilities()
    backend_name = "this"

    @pytest.fixture
    def make_distributor(self) -> Callable[[], ClusterDistributor]:
        """A factory of new, not yet started distributors."""
        raise NotImplementedError("override `make_distributor` to return a factory of distributors")

    @pytest.fixture
    def distributor(
        self, make_distributor: Callable[[], ClusterDistributor]
    ) -> Iterator[ClusterDistributor]:
        """A started distributor, stopped after the test."""
        distributor = make_distributor()
        distributor.start()
        try:
            yield distributor
        finally:
            distributor.stop()

    @pytest.fixture
    def task_command(self, distributor: ClusterDistributor) -> str:
        """What to submit: worker-node arguments for a task instance."""
        return distributor.build_worker_node_command(task_instance_id=1)

    @pytest.fixture
    def task_resources(self) -> dict[str, Any]:
        """Resources of the submitted instances; override for backends that need some."""
        return {"cores": 1, "memory": "64M", "runtime": "60s"}

    @pytest.fixture
    def status_query_counter(self) -> Callable[[], int] | None:
        """A callable that tells how many status queries the backend has received so far.

        Backends override it (e.g. with wrappers of `squeue` first on PATH) so that the kit can
        check that status is one bulk query per call; None means it cannot be observed.
        """
        return None

    def require(self, flag: str) -> None:
        self.capabilities.require(flag, self.backend_name)

    # -- unknown ids (contracts 2, 3, 4) ------------------------------------------------------

    def test_unknown_ids_are_neither_submitted_nor_running(
        self, distributor: ClusterDistributor
    ) -> None:
        assert distributor.get_submitted_or_running([]) == set()
        assert distributor.get_submitted_or_running(list(UNKNOWN_IDS)) == set()

    def test_killing_unknown_ids_is_not_an_error(self, distributor: ClusterDistributor) -> None:
        distributor.terminate_task_instances(list(UNKNOWN_IDS))
        distributor.terminate_task_instances([])

    @pytest.mark.parametrize("distributor_id", UNKNOWN_IDS)
    def test_exit_info_of_unknown_id_is_unknown_and_never_raises(
        self, distributor: ClusterDistributor, distributor_id: str
    ) -> None:
        state, message = _state_and_message(distributor.get_remote_exit_info(distributor_id))
        assert state is ErrorState.UNKNOWN_ERROR
        assert message, "an unknown outcome must say why it is unknown"

    def test_unknown_ids_have_no_queueing_errors(self, distributor: ClusterDistributor) -> None:
        assert distributor.get_queueing_errors(list(UNKNOWN_IDS)) == {}

    # -- submission ---------------------------------------------------------------------------

    def test_submissions_get_distinct_string_ids(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        ids = [
            distributor.submit_to_batch_distributor(task_command, f"kit-{n}", dict(task_resources))
            for n in range(3)
        ]
        distributor.terminate_task_instances(ids)
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == 3

    def test_array_steps_are_zero_based(
        self, distributor: ClusterDistributor, task_resources: dict[str, Any]
    ) -> None:
        self.require("arrays")
        command = distributor.build_worker_node_command(array_id=1, batch_number=0)
        steps = distributor.submit_array_to_batch_distributor(
            command, "kit-array", dict(task_resources), 5
        )
        distributor.terminate_task_instances(list(steps.values()))
        assert sorted(steps) == [0, 1, 2, 3, 4]
        assert len(set(steps.values())) == 5
        assert all(isinstance(i, str) and i for i in steps.values())

    def test_status_answers_only_for_the_ids_asked(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        ids = [
            distributor.submit_to_batch_distributor(task_command, f"kit-{n}", dict(task_resources))
            for n in range(4)
        ]
        try:
            asked = [ids[0], ids[2], UNKNOWN_IDS[0]]
            assert distributor.get_submitted_or_running(asked) <= {ids[0], ids[2]}
        finally:
            distributor.terminate_task_instances(ids)

    def test_status_is_one_bulk_query(
        self,
        distributor: ClusterDistributor,
        task_command: str,
        task_resources: dict[str, Any],
        status_query_counter: Callable[[], int] | None,
    ) -> None:
        if status_query_counter is None:
            pytest.skip(f"the {self.backend_name} backend's tests give no status_query_counter")
        ids = [
            distributor.submit_to_batch_distributor(
                task_command, f"kit-bulk-{n}", dict(task_resources)
            )
            for n in range(10)
        ]
        try:
            before = status_query_counter()
            distributor.get_submitted_or_running(ids)
            assert status_query_counter() - before <= 1
        finally:
            distributor.terminate_task_instances(ids)

    # -- kill (contract 2) --------------------------------------------------------------------

    def test_killed_instance_is_not_running_and_never_done(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        distributor_id = distributor.submit_to_batch_distributor(
            task_command, "kit-kill", dict(task_resources)
        )
        assert distributor.get_submitted_or_running([distributor_id]) == {distributor_id}, (
            "the kill contract needs an instance that is still queued or running: "
            "make `task_command` (or the backend's test settings) keep it alive"
        )
        distributor.terminate_task_instances([distributor_id])
        assert distributor.get_submitted_or_running([distributor_id]) == set()
        state, _ = _state_and_message(distributor.get_remote_exit_info(distributor_id))
        assert state is not ErrorState.DONE

    # -- exit info and shutdown (contracts 4, 6) ----------------------------------------------

    def test_exit_info_is_a_remote_exit_info(
        self, distributor: ClusterDistributor, task_command: str, task_resources: dict[str, Any]
    ) -> None:
        distributor_id = distributor.submit_to_batch_distributor(
            task_command, "kit-info", dict(task_resources)
        )
        try:
            info = distributor.get_remote_exit_info(distributor_id)
        finally:
            distributor.terminate_task_instances([distributor_id])
        assert isinstance(info, RemoteExitInfo)

    def test_stop_is_idempotent(self, make_distributor: Callable[[], ClusterDistributor]) -> None:
        never_started = make_distributor()
        never_started.stop()
        distributor = make_distributor()
        distributor.start()
        distributor.stop()
        distributor.stop()

    def test_worker_node_command_is_arguments_only(self, distributor: ClusterDistributor) -> None:
        single = distributor.build_worker_node_command(task_instance_id=7)
        array = distributor.build_worker_node_command(array_id=3, batch_number=2)
        assert "7" in single.split()
        assert distributor.worker_node_entry_point not in single
        assert {"3", "2"} <= set(array.split())
        with pytest.raises(ValueError, match="task_instance_id"):
            distributor.build_worker_node_command()
        assert distributor.worker_node_entry_point
