"""Finding and loading backends: entry points in the group `jobfleet.plugins`, through pluggy.

Built-in backends are installed and found exactly like third-party ones. Loading is lazy: the
entry points are read from package metadata (no import) and a plugin module is imported only
when its cluster type is asked for, once per registry. A plugin that fails to import, to answer
its hooks or to fit the protocols is recorded with its error; the others go on working.

Environment:
- `JOBFLEET_DISABLE_PLUGINS=a,b`  never load these.
- `JOBFLEET_LOAD_PLUGINS=a,b`     load only these.
- `JOBFLEET_TRACE_PLUGINS=1`      print every hook call and its result to stderr.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from jobfleet.core import hookspecs
from jobfleet.core.cluster_protocol import (
    ClusterDistributor,
    ClusterQueue,
    ClusterWorkerNode,
    protocol_problems,
)
from jobfleet.core.entry_point_scan import (  # the scanner lives apart, for the wrapper
    ScannedEntryPoint,  # noqa: F401 - still importable from here
    scan_entry_point,
)
from jobfleet.core.errors import (
    JobfleetError,
    PluginLoadError,
    UnknownClusterError,
    UnknownProvisionerError,
)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from jobfleet.core.settings import SettingOption

ENTRY_POINT_GROUP = "jobfleet.plugins"
_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginStatus(enum.StrEnum):
    OK = "ok"
    BROKEN = "broken"
    DISABLED = "disabled"


class _WithSettings:
    """`setting_options` and `settings` of a loaded plugin (backend or provisioner)."""

    name: str
    settings_class: type | None

    def setting_options(self) -> list[SettingOption]:
        """The plugin's settings as CLI options and environment variables."""
        if self.settings_class is None:
            return []
        from jobfleet.core.settings import setting_options

        return setting_options(self.name, self.settings_class)

    def settings(
        self,
        cli_values: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Any:
        """The resolved settings instance (None when the plugin has no settings)."""
        if self.settings_class is None:
            return None
        from jobfleet.core.settings import resolve_settings

        return resolve_settings(self.name, self.settings_class, cli_values, environ)


@dataclass(frozen=True)
class ClusterPlugin(_WithSettings):
    """A loaded backend: its three classes, its settings and where it came from."""

    name: str
    queue_class: type[ClusterQueue]
    distributor_class: type[ClusterDistributor]
    worker_node_class: type[ClusterWorkerNode]
    settings_class: type | None
    distribution: str | None
    version: str | None
    module: ModuleType = field(repr=False)


@dataclass(frozen=True)
class PluginInfo:
    """One line of `jobfleet plugins`."""

    name: str
    distribution: str | None
    version: str | None
    entry_point: str
    status: PluginStatus
    error: str | None = None
    kinds: tuple[str, ...] = ()
    """What the plugin provides: "backend", "provisioner" or both (empty when not loaded)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kinds": list(self.kinds),
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "status": self.status.value,
            "error": self.error,
        }


@dataclass(frozen=True)
class ProvisionerPlugin(_WithSettings):
    """A loaded provisioner: its class, its settings and where it came from."""

    name: str
    provisioner_class: type
    settings_class: type | None
    distribution: str | None
    version: str | None
    module: ModuleType = field(repr=False)


def _names_from(environ: Mapping[str, str], variable: str) -> frozenset[str] | None:
    text = environ.get(variable)
    if text is None:
        return None
    return frozenset(part.strip() for part in text.split(",") if part.strip())


class _PluginManager(pluggy.PluginManager):
    """Takes unmarked functions named like a hook as its implementation (Jobmon modules)."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in _HOOK_NAMES and callable(getattr(plugin, name, None)):
            return {
                "wrapper": False,
                "hookwrapper": False,
                "optionalhook": False,
                "tryfirst": False,
                "trylast": False,
                "specname": None,
            }
        return opts


_HOOK_NAMES = frozenset(
    name
    for name in dir(hookspecs)
    if name.startswith(("get_cluster_", "get_provisioner_")) and callable(getattr(hookspecs, name))
)

PROVISIONER_HOOK = "get_provisioner_class"

BACKEND = "backend"
PROVISIONER = "provisioner"


class PluginRegistry:
    """The installed backends, loaded on demand. Safe to share between threads."""

    def __init__(
        self,
        entry_points_: Iterable[EntryPoint] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._disabled = _names_from(env, "JOBFLEET_DISABLE_PLUGINS") or frozenset()
        self._only = _names_from(env, "JOBFLEET_LOAD_PLUGINS")
        self._trace = env.get("JOBFLEET_TRACE_PLUGINS", "") not in ("", "0")
        self._given_entry_points = None if entry_points_ is None else list(entry_points_)
        self._entry_points: dict[str, EntryPoint] | None = None
        self._conflicts: dict[str, str] = {}
        self._modules: dict[str, tuple[ModuleType, _EntryPointLike]] = {}
        self._loaded: dict[str, ClusterPlugin] = {}
        self._provisioners: dict[str, ProvisionerPlugin] = {}
        self._provisioner_errors: dict[str, PluginLoadError] = {}
        self._kinds: dict[str, tuple[str, ...]] = {}
        self._errors: dict[str, PluginLoadError] = {}
        self._lock = threading.RLock()
        self.plugin_manager = _PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        if self._trace:
            self.plugin_manager.add_hookcall_monitoring(_trace_before, _trace_after)

    # -- discovery (metadata only, no import) -------------------------------------------------

    def _discover(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            found = self._given_entry_points
            if found is None:
                from importlib.metadata import entry_points

                found = list(entry_points(group=ENTRY_POINT_GROUP))
            self._entry_points = {}
            for ep in found:
                self._add_entry_point(ep)
        return self._entry_points

    def _add_entry_point(self, ep: EntryPoint) -> None:
        assert self._entry_points is not None
        known = self._entry_points.get(ep.name)
        if known is None:
            self._entry_points[ep.name] = ep
        elif _distribution(known) != _distribution(ep) or known.value != ep.value:
            # The same distribution found twice on sys.path is harmless; two different
            # distributions claiming one cluster type is not, and neither is picked.
            self._conflicts[ep.name] = (
                f"two installed distributions claim it: {_distribution(known)} ({known.value}) "
                f"and {_distribution(ep)} ({ep.value}); uninstall one of them"
            )

    def names(self) -> list[str]:
        """Every cluster type installed, usable or not, without importing anything."""
        with self._lock:
            return sorted(self._discover())

    def _blocked_reason(self, name: str) -> str | None:
        if name in self._disabled:
            return "disabled by JOBFLEET_DISABLE_PLUGINS"
        if self._only is not None and name not in self._only:
            return "not in JOBFLEET_LOAD_PLUGINS"
        return None

    # -- loading ------------------------------------------------------------------------------

    def get_cluster(self, name: str) -> ClusterPlugin:
        """The loaded plugin for a cluster type.

        Raises `UnknownClusterError` when none is installed (or it is disabled), and
        `PluginLoadError` when it is installed but broken.
        """
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            if name in self._errors:
                raise self._errors[name]
            module, found = self._module_for(name)
            if BACKEND not in self._kinds.get(name, (BACKEND,)):
                raise UnknownClusterError(
                    name,
                    [n for n in self._usable_names() if n != name],
                    detail=f"The jobfleet plugin {name!r} is a provisioner, not a backend.",
                )
            # The distribution's metadata (name, version) comes from a full discovery, even
            # when the wrapper's quick scan imported the module first.
            ep = self._discover().get(name, found)
            try:
                plugin = self._build(name, ep, module)
            except PluginLoadError as exc:
                self._errors[name] = exc
                raise
            self._loaded[name] = plugin
            return plugin

    def get_worker_node_class(self, name: str) -> type[ClusterWorkerNode]:
        """Only the worker-node class of a cluster type, checked against its protocol.

        The worker-node wrapper runs around every task on every node: it must not pay for
        the queue and distributor classes (and the client libraries they import).
        """
        with self._lock:
            if name in self._loaded:
                return self._loaded[name].worker_node_class
            if name in self._errors:
                raise self._errors[name]
            module, _ = self._module_for(name, self._scanned(name))
            found = self._call(name, module, "get_cluster_worker_node_class")
            problems = protocol_problems(found, ClusterWorkerNode)
            if problems:
                self._errors[name] = PluginLoadError(name, "; ".join(problems))
                raise self._errors[name]
            return found  # type: ignore[no-any-return]

    def _usable_names(self) -> list[str]:
        return [n for n in self._discover() if not self._blocked_reason(n)]

    def _scanned(self, name: str) -> _EntryPointLike | None:
        """The entry point found by a quick scan, when a full discovery has not run yet."""
        if self._entry_points is not None or self._given_entry_points is not None:
            return None
        return scan_entry_point(ENTRY_POINT_GROUP, name)

    def _module_for(
        self, name: str, found: _EntryPointLike | None = None
    ) -> tuple[ModuleType, _EntryPointLike]:
        """The plugin's module, imported and registered once; errors are remembered."""
        if name in self._modules:
            return self._modules[name]
        installed: Mapping[str, _EntryPointLike] = (
            {name: found} if found is not None else self._discover()
        )
        if name not in installed:
            raise UnknownClusterError(name, self._usable_names())
        blocked = self._blocked_reason(name)
        if blocked:
            raise UnknownClusterError(
                name,
                self._usable_names(),
                detail=f"The jobfleet plugin {name!r} is installed but {blocked}.",
            )
        ep = installed[name]
        try:
            module = self._import_checked(name, ep)
            self._register(name, module)
        except PluginLoadError as exc:
            self._errors[name] = exc
            raise
        self._modules[name] = (module, ep)
        return module, ep

    def _import_checked(self, name: str, ep: _EntryPointLike) -> ModuleType:
        if name in self._conflicts:
            raise PluginLoadError(name, self._conflicts[name])
        if not _VALID_NAME.match(name):
            raise PluginLoadError(
                name,
                "a cluster type name must be lower-case letters, digits and underscores, "
                "starting with a letter, so that it can name CLI options and variables",
            )
        return _import(name, ep)

    def _register(self, name: str, module: ModuleType) -> None:
        try:
            self.plugin_manager.register(module, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginLoadError(name, str(exc)) from exc
        provided = {caller.name for caller in self.plugin_manager.get_hookcallers(module) or ()}
        missing = [hook for hook in hookspecs.REQUIRED_HOOKS if hook not in provided]
        kinds: tuple[str, ...] = () if missing else (BACKEND,)
        if PROVISIONER_HOOK in provided:
            kinds += (PROVISIONER,)
        if len(missing) == len(hookspecs.REQUIRED_HOOKS) and kinds:
            # A provisioner only: none of the backend hooks, and none is missing by mistake.
            missing = []
        self._kinds[name] = kinds
        if missing:
            self.plugin_manager.unregister(module)
            raise PluginLoadError(
                name, f"the module {module.__name__} does not define {', '.join(missing)}"
            )

    def _build(self, name: str, ep: _EntryPointLike, module: ModuleType) -> ClusterPlugin:
        classes = {hook: self._call(name, module, hook) for hook in hookspecs.REQUIRED_HOOKS}
        expected = {
            "get_cluster_queue_class": ClusterQueue,
            "get_cluster_distributor_class": ClusterDistributor,
            "get_cluster_worker_node_class": ClusterWorkerNode,
        }
        problems = [
            p for hook, proto in expected.items() for p in protocol_problems(classes[hook], proto)
        ]
        if problems:
            raise PluginLoadError(name, "; ".join(problems))
        settings_class = self._call(name, module, "get_cluster_settings_class")
        if settings_class is not None:
            # Imported here: the worker-node wrapper loads plugins but never their settings.
            from jobfleet.core.settings import setting_options

            try:
                setting_options(name, settings_class)
            except JobfleetError as exc:
                raise PluginLoadError(name, str(exc)) from exc
        return ClusterPlugin(
            name=name,
            queue_class=classes["get_cluster_queue_class"],
            distributor_class=classes["get_cluster_distributor_class"],
            worker_node_class=classes["get_cluster_worker_node_class"],
            settings_class=settings_class,
            distribution=_distribution(ep),
            version=_version(ep),
            module=module,
        )

    def _call(self, name: str, module: ModuleType, hook: str, **arguments: Any) -> Any:
        """Call one hook of one plugin only: the others are left out of the call."""
        others = [p for p in self.plugin_manager.get_plugins() if p is not module]
        caller = self.plugin_manager.subset_hook_caller(hook, remove_plugins=others)
        try:
            return caller(**arguments)
        except Exception as exc:
            raise PluginLoadError(
                name, f"its hook {hook}() raised {type(exc).__name__}: {exc}"
            ) from exc

    def kinds(self, name: str) -> tuple[str, ...]:
        """What an installed plugin provides ("backend", "provisioner"); imports its module."""
        with self._lock:
            self._module_for(name)
            return self._kinds.get(name, ())

    def get_provisioner(self, name: str) -> ProvisionerPlugin:
        """The loaded provisioner of a plugin.

        Raises `UnknownProvisionerError` when no installed plugin of that name provides one,
        and `PluginLoadError` when it does but the class does not fit the protocol.
        """
        from jobfleet.core.scaling.provisioner import provisioner_problems

        with self._lock:
            if name in self._provisioners:
                return self._provisioners[name]
            if name in self._provisioner_errors:
                raise self._provisioner_errors[name]
            try:
                module, ep = self._module_for(name)
            except UnknownClusterError as exc:
                raise UnknownProvisionerError(name, self.provisioner_names()) from exc
            if PROVISIONER not in self._kinds.get(name, ()):
                raise UnknownProvisionerError(name, self.provisioner_names())
            ep = self._discover().get(name, ep)
            try:
                found = self._call(name, module, PROVISIONER_HOOK)
                if found is None:
                    raise PluginLoadError(name, f"its hook {PROVISIONER_HOOK}() returned None")
                problems = provisioner_problems(found)
                if problems:
                    raise PluginLoadError(name, "; ".join(problems))
                settings_class = None
                if BACKEND not in self._kinds[name]:  # a backend's settings are its own
                    settings_class = self._call(name, module, "get_cluster_settings_class")
                    if settings_class is not None:
                        from jobfleet.core.settings import setting_options

                        try:
                            setting_options(name, settings_class)
                        except JobfleetError as exc:
                            raise PluginLoadError(name, str(exc)) from exc
            except PluginLoadError as exc:
                self._provisioner_errors[name] = exc
                raise
            plugin = ProvisionerPlugin(
                name=name,
                provisioner_class=found,
                settings_class=settings_class,
                distribution=_distribution(ep),
                version=_version(ep),
                module=module,
            )
            self._provisioners[name] = plugin
            return plugin

    def provisioner_names(self) -> list[str]:
        """Every usable plugin that provides a provisioner (imports their modules)."""
        names = []
        for name in sorted(self._usable_names()):
            try:
                self._module_for(name)
            except JobfleetError:
                continue
            if PROVISIONER in self._kinds.get(name, ()):
                names.append(name)
        return names

    def version_info(self, name: str) -> Mapping[str, str]:
        """What the plugin's optional `get_cluster_version_info` hook says (may be empty)."""
        module = self._module_for(name)[0]
        if BACKEND in self._kinds.get(name, ()):
            module = self.get_cluster(name).module
        try:
            info = self._call(name, module, "get_cluster_version_info")
        except PluginLoadError as exc:
            return {"error": exc.reason}
        return dict(info or {})

    def cluster_queues(self, name: str, settings: Any) -> dict[str, dict[str, Any]] | None:
        """The queues the plugin's optional `get_cluster_queues` hook reads from its cluster,
        or None when the plugin has no such hook."""
        plugin = self.get_cluster(name)
        if not hasattr(plugin.module, "get_cluster_queues"):
            return None
        found = self._call(name, plugin.module, "get_cluster_queues", settings=settings)
        if found is None:
            return None
        return {str(queue): dict(parameters) for queue, parameters in found.items()}

    # -- listing ------------------------------------------------------------------------------

    def list_plugins(self) -> list[PluginInfo]:
        """Every installed plugin with its status; loads each one that is not disabled."""
        return [self._info(name, ep) for name, ep in sorted(self._discover().items())]

    def _info(self, name: str, ep: EntryPoint) -> PluginInfo:
        def info(status: PluginStatus, error: str | None = None) -> PluginInfo:
            kinds = self._kinds.get(name, ())
            return PluginInfo(name, _distribution(ep), _version(ep), ep.value, status, error, kinds)

        blocked = self._blocked_reason(name)
        if blocked:
            return info(PluginStatus.DISABLED, blocked)
        try:
            self._module_for(name)
            if BACKEND in self._kinds.get(name, ()):
                self.get_cluster(name)
            if PROVISIONER in self._kinds.get(name, ()):
                self.get_provisioner(name)
        except PluginLoadError as exc:
            return info(PluginStatus.BROKEN, exc.reason)
        return info(PluginStatus.OK)


class _EntryPointLike(Protocol):
    """What the registry uses of an entry point (importlib.metadata's, or a scanned one)."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


def _import(name: str, ep: _EntryPointLike) -> ModuleType:
    try:
        loaded = ep.load()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginLoadError(
            name, f"importing {ep.value} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(loaded, ModuleType):
        raise PluginLoadError(
            name, f"the entry point {ep.value} must name a module, not {loaded!r}"
        )
    return loaded


def _distribution(ep: _EntryPointLike) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def _version(ep: _EntryPointLike) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else None


def _trace_before(
    hook_name: str, methods: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]
) -> None:
    plugins = ", ".join(impl.plugin_name for impl in methods) or "no plugin"
    sys.stderr.write(f"jobfleet: calling {hook_name}() of {plugins}\n")
    _trace_start.value = time.perf_counter()


def _trace_after(
    outcome: pluggy.Result[object],
    hook_name: str,
    methods: Sequence[pluggy.HookImpl],
    kwargs: Mapping[str, object],
) -> None:
    elapsed = (time.perf_counter() - getattr(_trace_start, "value", time.perf_counter())) * 1000
    if outcome.exception is None:
        result = repr(outcome.get_result())
    else:
        result = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
    sys.stderr.write(f"jobfleet: {hook_name}() -> {result} ({elapsed:.1f} ms)\n")


_trace_start = threading.local()

_default: PluginRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> PluginRegistry:
    """The process-wide registry, built on first use from the environment of that moment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginRegistry()
        return _default


def get_cluster(name: str) -> ClusterPlugin:
    """The plugin for a cluster type, from the process-wide registry."""
    return default_registry().get_cluster(name)


def get_worker_node_class(name: str) -> type[ClusterWorkerNode]:
    """Only the worker-node class of a cluster type, from the process-wide registry."""
    return default_registry().get_worker_node_class(name)


def get_provisioner(name: str) -> ProvisionerPlugin:
    """The provisioner of a plugin, from the process-wide registry."""
    return default_registry().get_provisioner(name)


def list_plugins() -> list[PluginInfo]:
    """Every installed plugin with its status, from the process-wide registry."""
    return default_registry().list_plugins()
