"""catrs-plugin: CAT-RS training and randomized-smoothing certification.

The core depends on torch, numpy, scipy and pluggy; the ART, timm and data-set glue lives in
``catrs_adapters``. ``from catrs_plugin import CATRSTrainer, PyTorchCATRS`` re-exports the ART
classes lazily, so importing the core does not import ART. It is the import that works however
the package was installed: ``from art.defences.trainer import CATRSTrainer`` relies on the
start-up hook of :mod:`catrs_adapters.hook`, which ``pip install --target`` plus ``PYTHONPATH``
does not run.

The code lives in one folder per job (``utils``, ``backbones``, ``results``, ``certify``,
``methods``, ``plugins``, ``train``, ``compare``, ``cli``, each importing only those before it);
the names below are the public API wherever they live. Each is imported on first use (module
``__getattr__``), so ``import catrs_plugin`` and the ``catrs`` command's start-up (``catrs --help``)
do not import torch; ``from catrs_plugin import Smooth`` imports what ``Smooth`` needs.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it, imported when the name is first used.
_EXPORTS = {
    "Smooth": "catrs_plugin.certify.smoothing",
    "certify_to_file": "catrs_plugin.certify.files",
    "predict_to_file": "catrs_plugin.certify.files",
    "certified_radius": "catrs_plugin.certify.stats",
    "lower_confidence_bound": "catrs_plugin.certify.stats",
    "train": "catrs_plugin.train.loop",
    "TrainConfig": "catrs_plugin.train.loop",
    "TensorData": "catrs_plugin.train.loop",
    "smoothed_soft_labels": "catrs_plugin.train.soft_labels",
    "Method": "catrs_plugin.methods",
    "TrainBatch": "catrs_plugin.methods",
    "CATRS": "catrs_plugin.methods",
    "GAUSSIAN": "catrs_plugin.methods",
    "catrs_loss": "catrs_plugin.methods",
    "gaussian_loss": "catrs_plugin.methods",
    "worst_case_noise": "catrs_plugin.methods",
    "get_registry": "catrs_plugin.plugins.registry",
    "save_checkpoint": "catrs_plugin.train.checkpoint",
    "load_checkpoint": "catrs_plugin.train.checkpoint",
    "read_checkpoint": "catrs_plugin.train.checkpoint",
    "ResultWriter": "catrs_plugin.results.tsv",
    "read_certify_results": "catrs_plugin.results.tsv",
    "average_certified_radius": "catrs_plugin.results.metrics",
    "certified_accuracy": "catrs_plugin.results.metrics",
    "summarize": "catrs_plugin.results.metrics",
    # The ART classes: importing the core does not import ART.
    "PyTorchCATRS": "catrs_adapters.art.estimator",
    "CATRSTrainer": "catrs_adapters.art.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        if name != "train":  # see _Package
            globals()[name] = value
        return value
    raise AttributeError(f"module 'catrs_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``catrs_plugin.train`` is the function :func:`catrs_plugin.train.loop.train`, as it was when this
    module imported everything at once, although a sub-package of the same name exists: importing
    ``catrs_plugin.train`` (the sub-package) sets this attribute to it, which the setter ignores."""

    @property
    def train(self) -> Any:
        return __getattr__("train")

    @train.setter
    def train(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
