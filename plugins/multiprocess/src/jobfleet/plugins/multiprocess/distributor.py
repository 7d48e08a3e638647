"""The multiprocess distributor: local wrapper processes within a pool of cores, memory, GPUs.

All of it is `jobfleet.core.local.LocalDistributor`; this backend names itself and its settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

from jobfleet.core.local.distributor import LocalDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings


class MultiprocessDistributor(LocalDistributor):
    """Runs wrappers as local processes, as many at once as the resource pool allows."""

    cluster_type: ClassVar[str] = "multiprocess"
    settings_class: ClassVar[type[Any] | None] = MultiprocessSettings
