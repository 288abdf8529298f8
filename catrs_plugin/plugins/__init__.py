"""The extension surface: hook specifications, the entry-point registry, the specs plugins return, the built-ins.
Imports :mod:`catrs_plugin.methods`, :mod:`catrs_plugin.backbones` and the layers below them, never train or compare."""

from catrs_plugin.plugins.hookspecs import hookimpl
from catrs_plugin.plugins.registry import PluginError, Registry, get_registry
from catrs_plugin.plugins.specs import AttackSpec, DatasetSpec, ModelSpec

__all__ = ["AttackSpec", "DatasetSpec", "ModelSpec", "PluginError", "Registry", "get_registry", "hookimpl"]
