"""Jobmon cluster type `jobfleet_slurm`: jobfleet's slurm backend."""

from jobfleet.jobmon import make_plugin

globals().update(make_plugin("slurm"))
