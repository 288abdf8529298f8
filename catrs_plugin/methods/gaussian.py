"""Gaussian data augmentation (Cohen, Rosenfeld and Kolter, ICML 2019).

Loss: ``CE(f(x + d), y)`` with one ``d ~ N(0, sigma^2 I)`` per example, as in the reference
``train.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import Method, TrainBatch
from catrs_plugin.methods.smoothed import MNIST_TRAINING


def gaussian_loss(model: nn.Module, batch: TrainBatch) -> torch.Tensor:
    """Cross-entropy of the model on one Gaussian-noised copy of each input."""
    logits = model(batch.inputs + batch.gaussian())
    batch.observe(logits)
    return F.cross_entropy(logits, batch.targets)


GAUSSIAN = Method(
    name="gaussian",
    paper="Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019",
    loss=gaussian_loss,
    defaults={},
    presets={"paper": {0.25: {}, 0.5: {}, 1.0: {}}, "imagenet": {0.25: {}, 0.5: {}, 1.0: {}},
             "mnist": {0.25: {}, 0.5: {}, 1.0: {}}},
    # Cohen et al.'s ImageNet recipe (also CAT-RS's teacher): ResNet-50, 90 epochs, lr 0.1 x0.1 every 30;
    # the reference's MNIST teacher command (LeNet, lr 0.01).
    training={"imagenet": {"epochs": 90, "batch_size": 256, "lr": 0.1, "lr_step_size": 30}, "mnist": MNIST_TRAINING},
    description="Gaussian noise augmentation: cross-entropy on x + N(0, sigma^2 I)",
)
