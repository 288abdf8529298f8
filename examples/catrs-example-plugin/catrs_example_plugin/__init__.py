"""An example catrs plugin: Gaussian augmentation with label smoothing, as a registered method.

The loss is ``CE_smooth(f(x + d), y)`` with one ``d ~ N(0, sigma^2 I)`` per example drawn from
the batch's generator (so runs are reproducible) and the label-smoothed cross-entropy of
Szegedy et al. (2016) with weight ``smoothing`` on the uniform distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods import Method, TrainBatch
from catrs_plugin.plugins.hookspecs import hookimpl


def label_smoothing_loss(model: nn.Module, batch: TrainBatch, *, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross-entropy of the model on one Gaussian-noised copy of each input."""
    noisy = batch.inputs + batch.gaussian()
    return F.cross_entropy(model(noisy), batch.targets, label_smoothing=smoothing)


GAUSSIAN_LS = Method(
    name="gaussian-ls",
    paper="Szegedy et al. Rethinking the Inception Architecture for Computer Vision. CVPR 2016 (label smoothing)",
    loss=label_smoothing_loss,
    defaults={"smoothing": 0.1},
    presets={"paper": {0.25: {"smoothing": 0.1}, 0.5: {"smoothing": 0.1}, 1.0: {"smoothing": 0.1}}},
    description="Gaussian augmentation with label-smoothed cross-entropy (an example plugin)",
)


@hookimpl
def catrs_register_methods() -> list[Method]:
    return [GAUSSIAN_LS]
