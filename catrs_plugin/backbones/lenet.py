"""LeNet for 28x28 grey images, laid out like the reference code's ``archs/lenet.py``.

Two 5x5 convolutions (20 and 50 channels), each followed by ReLU and 2x2 max pooling, then
linear layers of 500 units and ``num_classes`` outputs: 431,080 parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """LeNet-5 variant of the reference code (``conv1``, ``conv2``, ``fc1``, ``fc2``).

    Parameters
    ----------
    num_classes : int
        Size of the last layer.
    in_chans : int
        Input channels (1 for MNIST).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def lenet(num_classes: int = 10, in_chans: int = 1) -> LeNet:
    """LeNet for MNIST-sized inputs (431,080 parameters for 10 classes)."""
    return LeNet(num_classes, in_chans)
