"""Jobmon cluster type `jobfleet_multiprocess`: jobfleet's multiprocess backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("multiprocess"))
