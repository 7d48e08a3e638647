"""The small taxonomy of errors jobfleet raises on purpose.

Every message is a full sentence that a person can act on; the CLI prints them without a
traceback. Anything else that escapes is a bug.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class JobfleetError(Exception):
    """Base of every error jobfleet raises on purpose."""


class PluginLoadError(JobfleetError):
    """A plugin could not be imported, or what it provides breaks the protocols."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"The jobfleet plugin {plugin!r} could not be loaded: {reason}")
        self.plugin = plugin
        self.reason = reason


class UnknownClusterError(JobfleetError, LookupError):
    """No usable plugin is installed under the cluster type asked for."""

    def __init__(self, name: str, installed: Iterable[str], detail: str | None = None) -> None:
        names = sorted(installed)
        listing = ", ".join(names) if names else "none"
        message = detail or f"No jobfleet plugin is installed for the cluster type {name!r}."
        super().__init__(
            f"{message} Installed: {listing}. "
            f"If it is published, install it with: pip install jobfleet-{name}"
        )
        self.name = name
        self.installed = names


class ResourceError(JobfleetError, ValueError):
    """A resource request (or a queue limit) has a value jobfleet cannot use."""

    def __init__(
        self, field: str, value: object, accepted: str, problem: str | None = None
    ) -> None:
        what = problem or "is not valid"
        super().__init__(f"Resource {field!r}: {value!r} {what}. Accepted: {accepted}.")
        self.field = field
        self.value = value
        self.accepted = accepted


class SettingsError(JobfleetError, ValueError):
    """A backend setting (from the command line or the environment) has an unusable value."""


class ChannelError(JobfleetError):
    """The host channel (task specs and reports) could not be read or written."""


class ProtocolVersionError(ChannelError):
    """The host and the worker node speak different versions of the channel protocol."""


class BackendError(JobfleetError):
    """The backend (scheduler, API server, local process table) failed to do what was asked."""


class UnknownProvisionerError(JobfleetError, LookupError):
    """No usable plugin provides a provisioner under the name asked for."""

    def __init__(self, name: str, installed: Iterable[str]) -> None:
        names = sorted(installed)
        listing = ", ".join(names) if names else "none"
        super().__init__(
            f"No jobfleet plugin provides a provisioner named {name!r}. "
            f"Provisioners installed: {listing}. "
            f"If it is published, install it with: pip install jobfleet-{name}"
        )
        self.name = name
        self.installed = names
