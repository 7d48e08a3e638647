"""The conformance kit: pytest classes a plugin's own tests subclass in a few lines.

    from jobfleet.core.testing import Capabilities, DistributorTests, RegistrationTests

    class TestRegistration(RegistrationTests):
        cluster_name = "mybackend"

    class TestDistributor(DistributorTests):
        capabilities = Capabilities(arrays=False)

        @pytest.fixture
        def make_distributor(self):
            return lambda *, host_url: MyDistributor("test-cluster", host_url=host_url)

Fixtures the kit cannot know raise `NotImplementedError` until a subclass overrides them.
A backend declares what it cannot do with `Capabilities`; the tests that need it are skipped
with the reason. The classes carry no `Test` prefix, so pytest collects only the subclasses.
"""

from jobfleet.core.testing.capabilities import Capabilities
from jobfleet.core.testing.distributor import DistributorFactory, DistributorTests
from jobfleet.core.testing.host import KitHost, Submitted
from jobfleet.core.testing.provisioner import ProvisionerFactory, ProvisionerTests
from jobfleet.core.testing.queue import QueueTests
from jobfleet.core.testing.registration import RegistrationTests
from jobfleet.core.testing.worker_node import WorkerNodeTests

__all__ = [
    "Capabilities",
    "DistributorFactory",
    "DistributorTests",
    "KitHost",
    "ProvisionerFactory",
    "ProvisionerTests",
    "QueueTests",
    "RegistrationTests",
    "Submitted",
    "WorkerNodeTests",
]
