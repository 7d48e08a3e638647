"""Jobmon cluster type `jobfleet_mesos`: jobfleet's mesos backend, built by jobfleet.jobmon."""
from jobfleet.jobmon import make_plugin
globals().update(make_plugin("mesos"))
