"""PSI/J finds executors through this module: it scans `psij-descriptors` on every sys.path
entry and loads the class from the same entry (so this file and `jobfleet/psij/` ship together).
Importing it must stay cheap: PSI/J imports every descriptor module when `psij` is imported."""

from packaging.version import Version
from psij.descriptor import Descriptor

__PSI_J_EXECUTORS__ = [
    Descriptor(
        name="jobfleet",
        nice_name="jobfleet",
        version=Version("0.1.0"),
        cls="jobfleet.psij.registered.JobfleetJobExecutor",
    )
]
