"""The worker-node member exists and stays light until its own issue fills it."""

import subprocess
import sys


def test_importing_the_worker_node_pulls_in_no_host_library():
    probe = (
        "import sys, jobfleet.worker_node\n"
        "heavy = ('click', 'rich', 'sqlalchemy', 'pluggy')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
