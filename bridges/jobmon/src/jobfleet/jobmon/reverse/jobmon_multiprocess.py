"""jobfleet cluster type `jobmon_multiprocess`: Jobmon's own multiprocess plugin (jobmon_core)."""

from jobfleet.jobmon.reverse import adapt

globals().update(adapt("multiprocess", "jobmon_multiprocess"))
