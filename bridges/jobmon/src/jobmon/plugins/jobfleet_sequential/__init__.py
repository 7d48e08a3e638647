"""Jobmon cluster type `jobfleet_sequential`: jobfleet's sequential backend, built by jobfleet.jobmon."""
from jobfleet.jobmon import make_plugin
globals().update(make_plugin("sequential"))
