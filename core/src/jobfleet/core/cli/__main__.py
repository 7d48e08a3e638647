"""`python -m jobfleet.core.cli`: how a detached `jobfleet run` starts its service."""

import sys

from jobfleet.core.cli import main

sys.exit(main())
