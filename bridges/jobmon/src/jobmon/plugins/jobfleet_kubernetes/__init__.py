"""Jobmon cluster type `jobfleet_kubernetes`: jobfleet's kubernetes backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("kubernetes"))
