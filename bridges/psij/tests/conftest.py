"""jobfleet-psij's tests. (`slurm_cluster` comes from the workspace's root conftest.py.)"""

# psij_harness/ holds modules copied beside PSI/J's unpacked suite when it runs
# (test_psij_suite.py): its conftest.py belongs to that suite, not to this one.
collect_ignore = ["psij_harness"]
