"""The small CNN for the 8x8 digits of the embedded demo data."""

from __future__ import annotations

from torch import nn


def digits_cnn(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """A small CNN for 8x8 images (scikit-learn's digits): two conv layers and a linear head."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )
