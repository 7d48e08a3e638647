"""Jobmon cluster type `jobfleet_kubernetes`: jobfleet's kubernetes backend, built by jobfleet.jobmon."""
from jobfleet.jobmon import make_plugin
globals().update(make_plugin("kubernetes"))
