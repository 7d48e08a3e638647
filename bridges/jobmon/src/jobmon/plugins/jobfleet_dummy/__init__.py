"""Jobmon cluster type `jobfleet_dummy`: jobfleet's dummy backend, built by jobfleet.jobmon."""
from jobfleet.jobmon import make_plugin
globals().update(make_plugin("dummy"))
