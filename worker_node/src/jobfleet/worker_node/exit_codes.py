"""The wrapper's own exit codes.

When the command ran, the wrapper exits with the command's code (128 + N when signal N ended
it, as shells do), so a scheduler's accounting shows the task's outcome. Otherwise it exits with
one of these, chosen above the range shells give meaning to (126, 127, 128 + N up to 192).
"""

WRAPPER_FAILED = 240
"""The wrapper itself failed (no channel, no spec, an internal error); see its final report."""

VERSION_MISMATCH = 241
"""The host speaks another version of the channel protocol than this wrapper."""

USAGE_ERROR = 2
"""The command line was wrong (argparse's own code)."""
