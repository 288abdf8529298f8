"""Discovery of methods, models, datasets and attacks through the ``catrs`` entry-point group."""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy
from torch import nn

from catrs_plugin.backbones.normalize import NormalizeLayer
from catrs_plugin.methods.base import Method
from catrs_plugin.plugins import hookspecs
from catrs_plugin.plugins.specs import AttackSpec, DatasetSpec, ModelSpec

ENTRY_POINT_GROUP = "catrs"

#: Our own distribution: its entry points (the built-ins) register before any other plugin's.
DISTRIBUTION = "catrs-plugin"

#: The registration hooks of :mod:`catrs_plugin.plugins.hookspecs`, in the order they are called, with the
#: :class:`Registry` table each fills and the type of what it must return.
HOOKS: dict[str, tuple[str, type]] = {
    "catrs_register_methods": ("methods", Method),
    "catrs_register_models": ("models", ModelSpec),
    "catrs_register_datasets": ("datasets", DatasetSpec),
    "catrs_register_attacks": ("attacks", AttackSpec),
}


class PluginError(Exception):
    """A plugin that cannot be used as it is (unknown hook, a name already taken, a wrong return type)."""


@dataclass
class Registry:
    """Everything the installed plugins registered.

    Attributes
    ----------
    methods, models, datasets, attacks : dict
        Name to :class:`~catrs_plugin.methods.Method`, :class:`~catrs_plugin.plugins.specs.ModelSpec`,
        :class:`~catrs_plugin.plugins.specs.DatasetSpec`, :class:`~catrs_plugin.plugins.specs.AttackSpec`.
    plugins : dict
        Name to entry point (``"module"`` or ``"module:object"``) of every plugin that registered.
    failures : dict
        Plugin name to the reason it was skipped, with its entry point; the others load regardless.
        (A second entry point with a name already taken is keyed by ``"name = value"``.)
    """

    methods: dict[str, Method] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    attacks: dict[str, AttackSpec] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    _owners: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def method(self, name: str) -> Method:
        """The method called ``name``; an unknown name lists the valid ones."""
        return _lookup(self.methods, name, "method")

    def model(self, name: str) -> ModelSpec:
        """The architecture called ``name``; an unknown name lists the valid ones."""
        return _lookup(self.models, name, "architecture")

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset called ``name``; an unknown name lists the valid ones."""
        return _lookup(self.datasets, name, "dataset")

    def attack(self, name: str) -> AttackSpec:
        """The attack called ``name``; an unknown name lists the valid ones."""
        return _lookup(self.attacks, name, "attack")

    def create_model(self, arch: str, dataset: str, **kwargs: Any) -> nn.Module:
        """Build ``Sequential(NormalizeLayer(dataset mean, std), arch network)``."""
        data = self.dataset(dataset)
        net = self.model(arch).factory(num_classes=data.num_classes, in_chans=data.input_shape[0], **kwargs)
        return nn.Sequential(NormalizeLayer(data.mean, data.std), net)

    def add_plugin(self, plugin: str, entry_point: str, items: dict[str, list]) -> None:
        """Add one plugin's registrations (table name to items) all together, or none of them.

        Raises
        ------
        PluginError
            If a name is already registered in the same table (by an earlier plugin, or twice
            by this one); the message names both plugins and their entry points.
        """
        seen: set[tuple[str, str]] = set()
        for table, registered in items.items():
            for item in registered:
                key = (table, item.name)
                if key in self._owners or key in seen:
                    owner = self._owners.get(key, plugin)
                    raise PluginError(
                        f"registers {table[:-1]} {item.name!r}, which plugin {owner!r} "
                        f"({self.plugins.get(owner, entry_point)}) already registered; rename it"
                    )
                seen.add(key)
        for table, registered in items.items():
            for item in registered:
                getattr(self, table)[item.name] = item
                self._owners[(table, item.name)] = plugin
        self.plugins[plugin] = entry_point


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table)) or '(none registered)'}")
    return table[name]


def _skip(failures: dict[str, str], name: str, entry_point: str, reason: str) -> None:
    """Record and warn that plugin ``name`` (entry point ``entry_point``) is skipped."""
    failures[name] = f"{reason} [entry point {name} = {entry_point}]"
    warnings.warn(
        f"catrs plugin {name!r} (entry point {name} = {entry_point}) failed to load and is skipped: {reason}",
        RuntimeWarning,
        stacklevel=3,
    )


def _ours_first(entry_point: importlib.metadata.EntryPoint) -> bool:
    dist = getattr(entry_point, "dist", None)
    return dist is None or dist.metadata["Name"].lower().replace("_", "-") != DISTRIBUTION


def _unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> str:
    """Explain the hook implementations of ``plugin`` that match no hook specification."""
    unknown = sorted(caller.name for caller in manager.get_hookcallers(plugin) or () if not caller.has_spec())
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, HOOKS, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown hook {', '.join(hints)}; the hooks are {', '.join(HOOKS)}"


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str], dict[str, str]]:
    """A plugin manager with every ``catrs`` entry point that loads and passes pluggy's checks.

    Our own entry points come first. A plugin whose module does not import, that implements a
    hook :mod:`catrs_plugin.plugins.hookspecs` does not specify (a misspelt name; pluggy's
    ``check_pending``), or whose name another entry point already uses, is skipped with a
    ``RuntimeWarning`` naming the plugin and its entry point.

    Returns
    -------
    manager : pluggy.PluginManager
    plugins : dict
        Plugin name to entry point value, in registration order.
    failures : dict
        Plugin name (the entry point, where a second one uses a taken name) to why it was skipped.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins: dict[str, str] = {}
    failures: dict[str, str] = {}
    seen: dict[str, str] = {}
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ours_first):
        name, value = entry_point.name, entry_point.value
        if name in seen:
            if seen[name] != value:  # the same entry point twice on sys.path is harmless
                failures[f"{name} = {value}"] = f"the plugin name {name!r} is taken by entry point {name} = {seen[name]}"
                warnings.warn(f"catrs entry point {name} = {value} is skipped: the plugin name {name!r} is taken by "
                              f"entry point {name} = {seen[name]}; rename one of them", RuntimeWarning, stacklevel=2)
            continue
        seen[name] = value
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=name)
        except Exception as error:  # a broken third-party plugin must not break the others
            _skip(failures, name, value, f"{type(error).__name__}: {error}")
            continue
        try:
            manager.check_pending()
        except pluggy.PluginValidationError:
            reason = _unknown_hooks(manager, plugin)
            manager.unregister(name=name)
            _skip(failures, name, value, reason)
            continue
        plugins[name] = value
    return manager, plugins, failures


def _registrations(manager: pluggy.PluginManager, plugin: object) -> dict[str, list]:
    """Call each registration hook of one plugin; table name to the items it returned, type-checked."""
    items: dict[str, list] = {}
    for hook, (table, kind) in HOOKS.items():
        for implementation in getattr(manager.hook, hook).get_hookimpls():
            if implementation.plugin is not plugin:
                continue
            try:
                returned = list(implementation.function() or [])
            except Exception as error:
                raise PluginError(f"{hook} raised {type(error).__name__}: {error}") from error
            wrong = [item for item in returned if not isinstance(item, kind)]
            if wrong:
                raise PluginError(f"{hook} returned {wrong[0]!r}, not a {kind.__module__}.{kind.__qualname__}")
            items.setdefault(table, []).extend(returned)
    return items


def load_registry() -> Registry:
    """Collect a fresh :class:`Registry` from the installed plugins.

    Plugins register one at a time, all of their hooks together: a plugin whose hook raises,
    returns something of the wrong type, or registers a name that is already taken (a built-in's
    or an earlier plugin's) is skipped as a whole, recorded in ``failures`` and warned about,
    and every other plugin still registers.
    """
    manager, entry_points, failures = plugin_manager()
    registry = Registry(failures=failures)
    for name, value in entry_points.items():
        try:
            registry.add_plugin(name, value, _registrations(manager, manager.get_plugin(name)))
        except PluginError as error:
            _skip(registry.failures, name, value, str(error))
    return registry


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loaded once on first use."""
    return load_registry()


def refresh_registry() -> Registry:
    """Forget the cached registry (after installing a plugin at run time) and load it again."""
    get_registry.cache_clear()
    importlib.invalidate_caches()
    return get_registry()
