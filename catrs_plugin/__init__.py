"""catrs-plugin: CAT-RS training and randomized-smoothing certification.

The core depends on torch, numpy, scipy and pluggy; the ART, timm and data-set glue lives in
``catrs_adapters``. ``from catrs_plugin import CATRSTrainer, PyTorchCATRS`` re-exports the ART
classes lazily, so importing the core does not import ART. It is the import that works however
the package was installed: ``from art.defences.trainer import CATRSTrainer`` relies on the
start-up hook of :mod:`catrs_adapters.hook`, which ``pip install --target`` plus ``PYTHONPATH``
does not run.

The code lives in one folder per job (``utils``, ``backbones``, ``results``, ``certify``,
``methods``, ``plugins``, ``train``, ``compare``, ``cli``, each importing only those before it);
the names below are the public API wherever they live.
"""

from __future__ import annotations

from typing import Any

from catrs_plugin.certify.files import certify_to_file, predict_to_file
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound
from catrs_plugin.methods import CATRS, GAUSSIAN, Method, TrainBatch, catrs_loss, gaussian_loss, worst_case_noise
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy, summarize
from catrs_plugin.results.tsv import ResultWriter, read_certify_results
from catrs_plugin.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.train.soft_labels import smoothed_soft_labels

__version__ = "0.1.0"

_ART_EXPORTS = {
    "CATRSTrainer": "catrs_adapters.art.trainer",
    "PyTorchCATRS": "catrs_adapters.art.estimator",
}

__all__ = [
    "CATRS",
    "GAUSSIAN",
    "Method",
    "ResultWriter",
    "Smooth",
    "TensorData",
    "TrainBatch",
    "TrainConfig",
    "average_certified_radius",
    "catrs_loss",
    "certified_accuracy",
    "certified_radius",
    "certify_to_file",
    "gaussian_loss",
    "get_registry",
    "load_checkpoint",
    "lower_confidence_bound",
    "predict_to_file",
    "read_certify_results",
    "read_checkpoint",
    "save_checkpoint",
    "smoothed_soft_labels",
    "summarize",
    "train",
    "worst_case_noise",
    *_ART_EXPORTS,
]


def __getattr__(name: str) -> Any:
    if name in _ART_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_ART_EXPORTS[name]), name)
    raise AttributeError(f"module 'catrs_plugin' has no attribute {name!r}")
