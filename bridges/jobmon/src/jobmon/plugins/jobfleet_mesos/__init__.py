"""Jobmon cluster type `jobfleet_mesos`: jobfleet's mesos backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("mesos"))
