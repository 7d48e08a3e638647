"""The module PSI/J's descriptor names (`psij-descriptors/jobfleet_descriptor.py`).

PSI/J loads a descriptor's module from its file under a fresh module object, not through
`import`; a class defined in that module would be a second copy, unequal to
`jobfleet.psij.JobfleetJobExecutor` (and its config class unequal to the one users import).
Re-exporting the imported class keeps one class, whichever way it is reached.
"""

from jobfleet.psij.executor import JobfleetJobExecutor

__all__ = ["JobfleetJobExecutor"]
