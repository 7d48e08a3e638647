"""Conformance: a provisioner adds, lists, shapes and terminates nodes as the scaler expects.

    from jobfleet.core.testing import ProvisionerTests

    class TestMyProvisioner(ProvisionerTests):
        node_type = "c5.large"

        @pytest.fixture
        def make_provisioner(self, emulator):
            return lambda cluster_name: MyProvisioner(cluster_name, endpoint=emulator.url)

        @pytest.fixture
        def throttling_error(self):
            return botocore.exceptions.ClientError(
                {"Error": {"Code": "RequestLimitExceeded"}}, "RunInstances")

Set `supports_preemptible = False` when the provisioner has no spot capacity; the tests that
need it are skipped. Every test destroys the clusters it made, even when it fails.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator

import pytest

from jobfleet.core.scaling import (
    ManagedNodesNotSupported,
    Node,
    Provisioner,
    Shape,
    provisioner_problems,
)

ProvisionerFactory = Callable[[str], Provisioner]


class ProvisionerTests:
    """Subclass with `node_type` and the fixtures `make_provisioner` and `throttling_error`."""

    node_type: str = ""
    """A node type the provisioner can launch in the test environment."""
    supports_preemptible: bool = True
    """Whether `add_nodes(..., preemptible=True)` can launch (spot) nodes here."""
    spot_bid: float | None = 0.05

    @pytest.fixture
    def make_provisioner(self) -> ProvisionerFactory:
        raise NotImplementedError(
            "override the fixture `make_provisioner`: a callable (cluster_name) -> Provisioner"
        )

    @pytest.fixture
    def throttling_error(self) -> BaseException:
        raise NotImplementedError(
            "override the fixture `throttling_error`: an error the provider raises when it "
            "throttles requests (e.g. a ClientError with the code RequestLimitExceeded)"
        )

    @pytest.fixture
    def cluster_name(self) -> str:
        return f"kit-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def provisioner(
        self, make_provisioner: ProvisionerFactory, cluster_name: str
    ) -> Iterator[Provisioner]:
        if not self.node_type:
            raise NotImplementedError("set the class attribute `node_type`")
        made = make_provisioner(cluster_name)
        try:
            yield made
        finally:
            made.destroy_cluster()

    # -- the class ------------------------------------------------------------------------

    def test_class_fits_the_protocol(self, provisioner: Provisioner) -> None:
        assert provisioner_problems(type(provisioner)) == []
        assert isinstance(provisioner.node_types, list)

    # -- add, list, shape, terminate --------------------------------------------------------

    def test_added_nodes_are_listed_then_gone_after_terminate(
        self, provisioner: Provisioner
    ) -> None:
        added = provisioner.add_nodes(self.node_type, 2)
        assert len(added) == 2
        assert all(isinstance(node, Node) for node in added)
        assert len({node.name for node in added}) == 2
        for node in added:
            assert node.node_type == self.node_type
            assert node.preemptible is False
        listed = {node.name for node in provisioner.get_provisioned_workers()}
        assert {node.name for node in added} <= listed
        provisioner.terminate_nodes(added[:1])
        left = {node.name for node in provisioner.get_provisioned_workers()}
        assert added[0].name not in left
        assert added[1].name in left
        provisioner.terminate_nodes(added[1:])
        assert provisioner.get_provisioned_workers() == []

    def test_terminating_a_node_twice_is_not_an_error(self, provisioner: Provisioner) -> None:
        added = provisioner.add_nodes(self.node_type, 1)
        provisioner.terminate_nodes(added)
        provisioner.terminate_nodes(added)
        assert provisioner.get_provisioned_workers() == []

    def test_listing_filters_by_type_and_preemptibility(self, provisioner: Provisioner) -> None:
        added = provisioner.add_nodes(self.node_type, 1)
        names = {node.name for node in added}
        by_type = provisioner.get_provisioned_workers(node_type=self.node_type)
        assert names <= {node.name for node in by_type}
        assert all(node.node_type == self.node_type for node in by_type)
        assert provisioner.get_provisioned_workers(node_type="no-such-type-x") == []
        on_demand = provisioner.get_provisioned_workers(preemptible=False)
        assert names <= {node.name for node in on_demand}
        assert not names & {n.name for n in provisioner.get_provisioned_workers(preemptible=True)}

    def test_preemptible_nodes_are_marked(self, provisioner: Provisioner) -> None:
        if not self.supports_preemptible:
            pytest.skip("this provisioner has no preemptible capacity here")
        added = provisioner.add_nodes(self.node_type, 1, preemptible=True, spot_bid=self.spot_bid)
        assert len(added) <= 1
        for node in added:
            assert node.preemptible is True
        spot = provisioner.get_provisioned_workers(preemptible=True)
        assert {node.name for node in added} <= {node.name for node in spot}
        assert all(node.preemptible for node in spot)

    def test_zero_nodes_launch_nothing(self, provisioner: Provisioner) -> None:
        assert provisioner.add_nodes(self.node_type, 0) == []
        assert provisioner.get_provisioned_workers() == []

    def test_node_shape_is_usable(self, provisioner: Provisioner) -> None:
        shape = provisioner.get_node_shape(self.node_type)
        assert isinstance(shape, Shape)
        assert shape.cores > 0
        assert shape.memory > 0
        assert shape.wall_time > 0 or math.isinf(shape.wall_time)
        assert shape.preemptible is False
        if self.supports_preemptible:
            assert provisioner.get_node_shape(self.node_type, preemptible=True).preemptible

    def test_tags_are_strings(self, provisioner: Provisioner) -> None:
        for node in provisioner.add_nodes(self.node_type, 1):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in node.tags.items())

    # -- clusters are kept apart ---------------------------------------------------------

    def test_another_cluster_does_not_see_the_nodes(
        self, provisioner: Provisioner, make_provisioner: ProvisionerFactory
    ) -> None:
        other = make_provisioner(f"kit-other-{uuid.uuid4().hex[:8]}")
        try:
            provisioner.add_nodes(self.node_type, 1)
            assert other.get_provisioned_workers() == []
        finally:
            other.destroy_cluster()
        assert len(provisioner.get_provisioned_workers()) == 1

    def test_destroy_cluster_terminates_everything(self, provisioner: Provisioner) -> None:
        provisioner.add_nodes(self.node_type, 2)
        provisioner.destroy_cluster()
        assert provisioner.get_provisioned_workers() == []

    # -- managed nodes and retries -------------------------------------------------------

    def test_managed_nodes_work_or_are_refused_plainly(self, provisioner: Provisioner) -> None:
        refusal = ""
        try:
            result = provisioner.add_managed_nodes(self.node_type, 0, 2)
        except ManagedNodesNotSupported as exc:
            refusal = str(exc) or "(no message)"
            result = None
        assert result is None
        assert refusal != "(no message)", "say why managed nodes are not supported"

    def test_throttling_is_retried_and_plain_errors_are_not(
        self, provisioner: Provisioner, throttling_error: BaseException
    ) -> None:
        assert provisioner.retry_predicate(throttling_error) is True
        assert provisioner.retry_predicate(ValueError("a bug, not throttling")) is False
