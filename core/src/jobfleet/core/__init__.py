"""jobfleet core: cluster protocols, plugin discovery, resource model, conformance kit."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jobfleet-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
