"""Jobmon cluster type `jobfleet_sequential`: jobfleet's sequential backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("sequential"))
