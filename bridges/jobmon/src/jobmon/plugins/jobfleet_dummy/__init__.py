"""Jobmon cluster type `jobfleet_dummy`: jobfleet's dummy backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("dummy"))
