"""Expose our ART classes under ART's own module paths, without importing ART early.

Installed packages cannot add names to another package's modules, so the wheel ships a
one-line ``catrs_art.pth`` file (the mechanism pytest-cov uses) that imports this module at
interpreter start-up. It only puts a tiny finder at the front of ``sys.meta_path`` (one dict
look-up per import): nothing else is
imported, and nothing happens until Python imports one of the two target modules. Then the
finder lets Python's own loader run the module unchanged and gives it a module-level
``__getattr__`` (PEP 562), so that

* ``from art.defences.trainer import CATRSTrainer`` and
* ``from art.estimators.certification.randomized_smoothing import PyTorchCATRS``

import our classes on first access. Every other name, and every other module, behaves as
before. ``catrs_plugin.CATRSTrainer`` and ``catrs_plugin.PyTorchCATRS`` work without the hook.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Sequence

#: ART module -> {name: module of ours that defines it}.
EXPORTS: dict[str, dict[str, str]] = {
    "art.defences.trainer": {"CATRSTrainer": "catrs_adapters.art.trainer"},
    "art.estimators.certification.randomized_smoothing": {"PyTorchCATRS": "catrs_adapters.art.estimator"},
}


def _add_exports(module: ModuleType, names: dict[str, str]) -> None:
    fallback = module.__dict__.get("__getattr__")

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(module, name, value)
            return value
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]


class _ExportingLoader(importlib.abc.Loader):
    """Wraps the real loader; after it executes the module, adds our lazy exports."""

    def __init__(self, loader: importlib.abc.Loader, names: dict[str, str]) -> None:
        self._loader = loader
        self._names = names

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _add_exports(module, self._names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class ArtExportFinder(importlib.abc.MetaPathFinder):
    """Finds the two ART modules with the normal path machinery and wraps their loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        names = EXPORTS.get(fullname)
        if names is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ExportingLoader(spec.loader, names)
        return spec


def install() -> None:
    """Add the finder once; patch target modules that are already imported."""
    if not any(isinstance(finder, ArtExportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ArtExportFinder())
    for fullname, names in EXPORTS.items():
        module = sys.modules.get(fullname)
        if module is not None:
            _add_exports(module, names)


install()
