"""Loading plugins and dispatching hooks to one method.

Built-in methods and third-party ones arrive the same way: the ``benchbed`` entry-point group.
``BENCHBED_DISABLE=name,other`` blocks plugins by name before they load."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import pluggy

from benchbed import defaults, hookspecs
from benchbed.context import MethodInfo
from benchbed.cost import CostProfile
from benchbed.errors import BenchbedError

DISABLE_ENV = "BENCHBED_DISABLE"
DEFAULTS_NAME = "benchbed.defaults"
REQUIRED_METHOD_HOOKS = ("method_info", "build_mask", "finetune")


def plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    if not pm.is_blocked(DEFAULTS_NAME):
        pm.register(defaults, name=DEFAULTS_NAME)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin)
        raise BenchbedError(f"plugin {name!r} implements a hook benchbed does not define ({exc}); "
                            f"update it or disable it with {DISABLE_ENV}={name}") from exc
    return pm


@dataclass(frozen=True)
class Method:
    name: str
    info: MethodInfo
    package: str
    version: str
    hooks: tuple[str, ...]


class Methods:
    """The methods a plugin manager knows, and hook callers restricted to one of them."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm

    def _method_plugin_names(self) -> list[str]:
        return [impl.plugin_name for impl in self.pm.hook.method_info.get_hookimpls()]

    def caller(self, hook: str, method: str) -> pluggy.HookCaller:
        """``hook`` as seen by ``method``: its own implementations, non-method plugins, core defaults."""
        others = [self.pm.get_plugin(n) for n in self._method_plugin_names() if n != method]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    @cached_property
    def all(self) -> dict[str, Method]:
        dists = {self.pm.get_name(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        found = {}
        for name in sorted(self._method_plugin_names()):
            plugin = self.pm.get_plugin(name)
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
            missing = [h for h in REQUIRED_METHOD_HOOKS if h not in hooks]
            if missing:
                raise BenchbedError(f"method plugin {name!r} does not implement {', '.join(missing)}; "
                                    f"fix it or disable it with {DISABLE_ENV}={name}")
            (info,) = self.caller("method_info", name)()
            dist = dists.get(name)
            package = dist.project_name if dist is not None else getattr(plugin, "__name__", repr(plugin))
            version = dist.version if dist is not None else "unregistered"
            found[name] = Method(name, info, package, version, hooks)
        return found

    @cached_property
    def cost_profiles(self) -> dict[str, CostProfile]:
        return {p.name: p for contributed in self.pm.hook.cost_profiles() for p in contributed}

    def get(self, name: str) -> Method:
        if name not in self.all:
            known = ", ".join(self.all) or "none"
            raise BenchbedError(f"unknown method {name!r}; installed methods: {known} (see `benchbed plugins`)")
        return self.all[name]
