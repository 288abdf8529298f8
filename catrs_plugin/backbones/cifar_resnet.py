"""ResNets for 32x32 images (He et al., 2016, section 4.2), laid out like the reference code's.

``6n + 2`` layers: a 3x3 stem with 16 channels, three stages of ``n`` basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the resolution), global average
pooling and a linear head. Shortcuts that change shape are a 1x1 convolution with batch norm
(``downsample.0`` / ``downsample.1``). Parameter and buffer names equal those of the reference
implementation (Cohen et al.'s ``archs/cifar_resnet.py``, used unchanged by CAT-RS), so its
checkpoints load as they are: ResNet-110 has 1,730,714 parameters for 10 classes.

Deviation: the reference pools with ``AvgPool2d(8)``, which only fits 32x32 inputs; here the
pooling is adaptive, identical on 32x32 and usable on other sizes.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """A ``depth``-layer CIFAR ResNet (``depth = 6n + 2``).

    Parameters
    ----------
    depth : int
        20, 32, 44, 56, 110, ... (``depth - 2`` divisible by 6).
    num_classes : int
        Size of the linear head.
    in_chans : int
        Input channels.
    """

    def __init__(self, depth: int = 110, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_planes, planes, stride), *(BasicBlock(planes, planes) for _ in range(blocks - 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet20(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """CIFAR ResNet-20 (0.27 M parameters for 10 classes)."""
    return CifarResNet(20, num_classes, in_chans)


def cifar_resnet56(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """CIFAR ResNet-56 (0.86 M parameters for 10 classes)."""
    return CifarResNet(56, num_classes, in_chans)


def cifar_resnet110(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """CIFAR ResNet-110, the CAT-RS paper's CIFAR-10 model (1,730,714 parameters for 10 classes)."""
    return CifarResNet(110, num_classes, in_chans)
