"""Loading plugins and dispatching hooks to one method.

Built-in methods and third-party ones arrive the same way: the ``benchbed`` entry-point group.
``BENCHBED_DISABLE=name,other`` blocks plugins by name before they load. A plugin that fails to
import, registers hooks benchbed does not define, or describes itself wrongly is left out with one
warning naming it, so that one broken package never breaks the suites that do not use it."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata

import pluggy

from benchbed.config import PLAIN_NAME
from benchbed.data.registry import DatasetRegistry
from benchbed.errors import BenchbedError, first_line
from benchbed.model.registry import ModelRegistry
from benchbed.plugin import defaults, hookspecs
from benchbed.plugin.types import MethodInfo
from benchbed.registry import Registry
from benchbed.robustness.registry import MetricRegistry
from benchbed.secure.cost import CostProfile

DISABLE_ENV = "BENCHBED_DISABLE"
DEFAULTS_NAME = "benchbed.plugin.defaults"
REQUIRED_METHOD_HOOKS = ("method_info", "build_mask", "finetune")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"benchbed: warning: {message}", file=sys.stderr)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, loading the entry-point group plugin by plugin so that one failure stays one."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.distributions: dict[str, metadata.Distribution] = {}

    def load_entrypoints(self) -> None:
        for dist in metadata.distributions():
            for ep in dist.entry_points.select(group=hookspecs.PROJECT):
                if self.has_plugin(ep.name) or self.is_blocked(ep.name):
                    continue
                if not re.fullmatch(PLAIN_NAME, ep.name):  # a method's name becomes its entries' file names
                    warn_once(f"plugin {ep.name[:60]!r} ({dist.metadata['Name']}) is left out: its name must be "
                              "letters, digits, '_', '.' and '-' (at most 80, no leading '.' or '-')")
                    continue
                try:
                    self.register(ep.load(), name=ep.name)
                except Exception as exc:  # an import error, a bad hook signature: the plugin's problem only
                    warn_once(f"plugin {ep.name!r} ({dist.metadata['Name']}) could not be loaded and is left out "
                              f"({type(exc).__name__}: {first_line(exc)}); "
                              f"fix it or disable it with {DISABLE_ENV}={ep.name}")
                    continue
                self.distributions[ep.name] = dist

    def drop_unknown_hooks(self) -> None:
        """``check_pending``, with every plugin that implements a hook benchbed lacks left out."""
        while True:
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.get_name(exc.plugin)
                warn_once(f"plugin {name!r} implements a hook benchbed does not define ({exc}) and is left out; "
                          f"update it or disable it with {DISABLE_ENV}={name}")
                self.unregister(exc.plugin)


def plugin_manager(load_entrypoints: bool = True) -> PluginManager:
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    if not pm.is_blocked(DEFAULTS_NAME):
        pm.register(defaults, name=DEFAULTS_NAME)
    if load_entrypoints:
        pm.load_entrypoints()
    pm.drop_unknown_hooks()
    return pm


@dataclass(frozen=True)
class Method:
    name: str
    info: MethodInfo
    package: str
    version: str
    hooks: tuple[str, ...]


class Plugins:
    """What the installed plugins contribute: the methods, with hook callers restricted to one of them,
    and the registries of datasets, models, protocol profiles and robustness metrics."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.broken: dict[str, str] = {}

    def _method_plugin_names(self) -> list[str]:
        return [impl.plugin_name for impl in self.pm.hook.method_info.get_hookimpls()]

    def caller(self, hook: str, method: str) -> pluggy.HookCaller:
        """``hook`` as seen by ``method``: its own implementations, non-method plugins, core defaults."""
        others = [self.pm.get_plugin(n) for n in self._method_plugin_names() if n != method]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    @cached_property
    def all(self) -> dict[str, Method]:
        """The working methods; a broken one is left out with a warning and its reason kept in ``broken``."""
        dists = getattr(self.pm, "distributions", {})
        found = {}
        for name in sorted(self._method_plugin_names()):
            try:
                found[name] = self._describe(name, dists.get(name))
            except Exception as exc:  # whatever a third-party method_info does wrong stays its problem
                self.broken[name] = str(exc) if isinstance(exc, BenchbedError) else f"{type(exc).__name__}: {exc}"
                warn_once(f"method {name!r} is left out: {self.broken[name]}")
        return found

    def _describe(self, name: str, dist: metadata.Distribution | None) -> Method:
        plugin = self.pm.get_plugin(name)
        hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
        missing = [h for h in REQUIRED_METHOD_HOOKS if h not in hooks]
        if missing:
            raise BenchbedError(f"method plugin {name!r} does not implement {', '.join(missing)}; "
                                f"fix it or disable it with {DISABLE_ENV}={name}")
        (info,) = self.caller("method_info", name)()
        if not isinstance(info, MethodInfo):
            raise BenchbedError(f"method plugin {name!r} answered method_info with a {type(info).__name__}, "
                                f"not a MethodInfo; fix it or disable it with {DISABLE_ENV}={name}")
        package = dist.metadata["Name"] if dist is not None else getattr(plugin, "__name__", repr(plugin))
        version = dist.version if dist is not None else "unregistered"
        return Method(name, info, package, version, hooks)

    def _contributed(self, hook: str) -> list[tuple[str, object]]:
        """(package, item) for every item the plugins answer ``hook`` with: the package is the
        distribution that installed the plugin, or its module where none did (the core's defaults)."""
        dists = getattr(self.pm, "distributions", {})
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        found = []
        for impl in impls:  # each plugin's answer through pluggy, so that it is monitored like every hook call
            others = [other.plugin for other in impls if other.plugin is not impl.plugin]
            dist = dists.get(impl.plugin_name)
            package = dist.metadata["Name"] if dist is not None else getattr(impl.plugin, "__name__", impl.plugin_name)
            for answer in self.pm.subset_hook_caller(hook, remove_plugins=others)():
                found += [(package, item) for item in answer or []]
        return found

    @cached_property
    def cost_profiles(self) -> Registry[CostProfile]:
        return Registry("cost profile", "cost_profiles", self._contributed("cost_profiles"))

    @cached_property
    def datasets(self) -> DatasetRegistry:
        return DatasetRegistry(self._contributed("datasets"))

    @cached_property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self._contributed("models"))

    @cached_property
    def metrics(self) -> MetricRegistry:
        return MetricRegistry(self._contributed("metrics"))

    def get(self, name: str) -> Method:
        if name not in self.all:
            if name in self.broken:
                raise BenchbedError(self.broken[name])
            known = ", ".join(self.all) or "none"
            raise BenchbedError(f"unknown method {name!r}; installed methods: {known} (see `benchbed plugins`)")
        return self.all[name]
