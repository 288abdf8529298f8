"""Our names in ART and timm right after ``pip install``, for almost nothing at interpreter start-up.

An installed package cannot add names to another package's modules, so the wheel ships
``catrs_adapters.pth`` (read by Python up to 3.14) and, beside it, ``catrs_adapters.start``
(PEP 829, read by Python 3.15 and later instead of the ``.pth``'s import line). Both call
:func:`install` at start-up. It imports nothing (this module needs only :mod:`sys`) and puts
one small finder at the front of ``sys.meta_path``, which costs one dict look-up per import.
Nothing else happens until Python imports one of the modules below; then the finder lets the
module's own loader run it unchanged and afterwards

* gives ``art.defences.trainer`` and ``art.estimators.certification.randomized_smoothing`` a
  module-level ``__getattr__`` and ``__dir__`` (PEP 562) and an ``__all__``, so that
  ``from art.defences.trainer import CATRSTrainer`` imports our class on first access, and
  ``dir()`` and ``from art.defences.trainer import *`` list it beside ART's own names;
* imports :mod:`catrs_adapters.timm_models` right after ``timm``, which registers our backbones
  in timm's model registry (without importing their code), so that
  ``timm.create_model("cifar_resnet110", num_classes=10)`` works.

Every other name and module behaves as before. The finder and loader are duck-typed:
``importlib.abc`` would pull in ``pathlib``, ``tempfile`` and ``shutil`` and cost every Python
process about 40 ms.

The price: code of ours runs in every Python process of the environment, also in those that
never use ART or timm, and its finder sees every import (pytest-cov 7 dropped its own ``.pth``
start-up code: it could not be switched off, and it interfered with coverage's own patching of
subprocesses). With the environment variable ``CATRS_NO_STARTUP_HOOK`` set (non-empty),
:func:`install` does nothing, at start-up or later: the ``art.`` names are then absent, and
timm knows our models once :mod:`catrs_adapters.timm_models` is imported (loading the
``catrs`` registry does).

``.pth`` files are read only in site directories, not in ``PYTHONPATH`` entries, so after
``pip install --target DIR`` with ``PYTHONPATH=DIR`` the hook is installed by the first
``import catrs_adapters`` (which loading the ``catrs`` registry does) instead.
``from catrs_plugin import CATRSTrainer, PyTorchCATRS`` never depends on the hook.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # for the annotations only: importing typing at start-up would cost milliseconds
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

#: ART module -> {name: module of ours that defines it}.
ART_EXPORTS = {
    "art.defences.trainer": {"CATRSTrainer": "catrs_adapters.art.trainer"},
    "art.estimators.certification.randomized_smoothing": {"PyTorchCATRS": "catrs_adapters.art.estimator"},
}

#: Imported right after ``timm``; registers our backbones with :func:`timm.models.register_model`.
TIMM_REGISTRATION = "catrs_adapters.timm_models"

#: Set (non-empty) in the environment, it turns :func:`install` into a no-op.
STARTUP_OPT_OUT = "CATRS_NO_STARTUP_HOOK"

#: Attribute that marks our finder and our ``__getattr__`` functions (also those of a second copy
#: of this module, e.g. from an editable and a regular install on the same path).
_MARK = "_catrs_adapters_hook"


def _add_art_exports(module: "ModuleType") -> None:
    """Make our classes names of an ART module, as its own are, but imported on first access (once).

    A module-level ``__getattr__`` imports them; ``__dir__`` lists them; ``__all__`` (which ART's
    modules do not define, so that ``import *`` takes their public globals) becomes those
    globals plus ours, so that ``from art.defences.trainer import *`` imports them too.
    """
    fallback = module.__dict__.get("__getattr__")
    if getattr(fallback, _MARK, False):
        return
    names = ART_EXPORTS[module.__name__]
    listed = module.__dict__.get("__dir__")

    def __getattr__(name: str) -> "Any":
        if name in names:
            import importlib

            value = getattr(importlib.import_module(names[name]), name)
            setattr(module, name, value)
            return value
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    def __dir__() -> "list[str]":
        return sorted({*(listed() if listed is not None else module.__dict__), *names})

    setattr(__getattr__, _MARK, True)
    public = module.__dict__.get("__all__")
    if public is None:
        public = [name for name in module.__dict__ if not name.startswith("_")]
    module.__all__ = [*public, *(name for name in names if name not in public)]
    module.__dir__ = __dir__
    module.__getattr__ = __getattr__


def _register_timm_models(module: "ModuleType") -> None:
    """Register our backbones with timm; a failure is logged and leaves ``import timm`` intact."""
    try:
        __import__(TIMM_REGISTRATION)
    except Exception:  # a broken registration must never break `import timm`
        import logging

        logging.getLogger(__name__).warning(
            "catrs-plugin could not register its backbones with timm", exc_info=True
        )


#: Module name -> what to do once Python has executed it.
_AFTER_IMPORT = {**dict.fromkeys(ART_EXPORTS, _add_art_exports), "timm": _register_timm_models}


class _Loader:
    """Runs the module's own loader, then the action of :data:`_AFTER_IMPORT`; otherwise the loader itself."""

    def __init__(self, loader, after):
        self._loader = loader
        self._after = after

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._after(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class Finder:
    """Finds the watched modules with the other finders of ``sys.meta_path`` and wraps their loader."""

    def find_spec(self, fullname: str, path: "Sequence[str] | None" = None,
                  target: "ModuleType | None" = None) -> "ModuleSpec | None":
        after = _AFTER_IMPORT.get(fullname)
        if after is None:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None or getattr(finder, _MARK, False):
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, after)
        return spec


setattr(Finder, _MARK, True)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once per process) and treat modules already imported.

    Does nothing when the environment variable ``CATRS_NO_STARTUP_HOOK`` is set (non-empty).
    """
    os = sys.modules.get("os")  # site.py imports it before it reads .pth files; importing it here would not be free
    if os is not None and os.environ.get(STARTUP_OPT_OUT):
        return
    if not any(getattr(finder, _MARK, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, Finder())
    for fullname, after in _AFTER_IMPORT.items():
        module = sys.modules.get(fullname)
        if module is not None:
            after(module)
