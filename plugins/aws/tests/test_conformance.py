"""The AWS provisioner through the conformance kit, against a moto server on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobfleet.core.testing.provisioner import ProvisionerTests


class TestAwsProvisioner(ProvisionerTests):
    node_type = "c5.large"
    spot_bid = 0.05

    @pytest.fixture
    def make_provisioner(self, make_aws: Any) -> Any:
        return lambda cluster_name: make_aws(cluster_name)

    @pytest.fixture
    def throttling_error(self) -> BaseException:
        return ClientError(
            {"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}},
            "RunInstances",
        )
