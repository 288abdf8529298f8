"""Discovery of methods, models, datasets and attacks through the ``catrs`` entry-point group."""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy
from torch import nn

from catrs_plugin import hookspecs
from catrs_plugin.methods.base import Method
from catrs_plugin.models import NormalizeLayer
from catrs_plugin.specs import AttackSpec, DatasetSpec, ModelSpec

ENTRY_POINT_GROUP = "catrs"

#: The registration hooks of :mod:`catrs_plugin.hookspecs`, called in this order, and the
#: :class:`Registry` table each fills.
HOOKS = {
    "catrs_register_methods": "methods",
    "catrs_register_models": "models",
    "catrs_register_datasets": "datasets",
    "catrs_register_attacks": "attacks",
}


@dataclass
class Registry:
    """Everything the installed plugins registered.

    Attributes
    ----------
    methods, models, datasets, attacks : dict
        Name to :class:`~catrs_plugin.methods.Method`, :class:`~catrs_plugin.specs.ModelSpec`,
        :class:`~catrs_plugin.specs.DatasetSpec`, :class:`~catrs_plugin.specs.AttackSpec`.
    failures : dict
        Plugin name to the error that kept it from loading; the others load regardless.
    """

    methods: dict[str, Method] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    attacks: dict[str, AttackSpec] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

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

    def add(self, plugin: str, hook: str, items: list) -> None:
        target = getattr(self, HOOKS[hook])
        for item in items or []:
            target[item.name] = item


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table)) or '(none registered)'}")
    return table[name]


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str]]:
    """A plugin manager with every ``catrs`` entry point that loads; failures by plugin name."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    failures: dict[str, str] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.get_plugin(entry_point.name) is not None:
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except Exception as error:  # a broken third-party plugin must not break the others
            failures[entry_point.name] = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"catrs plugin {entry_point.name!r} ({entry_point.value}) failed to load and is skipped: "
                f"{type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=2,
            )
    return manager, failures


def load_registry() -> Registry:
    """Collect a fresh :class:`Registry` from the installed plugins.

    Each plugin's hooks are called one by one, so a plugin whose hook raises is reported in
    ``failures`` (and warned about) while every other plugin still registers.
    """
    manager, failures = plugin_manager()
    registry = Registry(failures=failures)
    for hook in HOOKS:
        caller = getattr(manager.hook, hook)
        for implementation in reversed(caller.get_hookimpls()):
            try:
                registry.add(implementation.plugin_name, hook, implementation.function())
            except Exception as error:
                registry.failures[implementation.plugin_name] = f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"catrs plugin {implementation.plugin_name!r} failed in {hook} and is skipped: "
                    f"{type(error).__name__}: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
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
