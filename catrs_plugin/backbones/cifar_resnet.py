"""ResNets for 32x32 images (He et al., 2016, section 4.2), laid out like the reference code's.

``6n + 2`` layers: a 3x3 stem with 16 channels, three stages of ``n`` basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the resolution), global average
pooling and a linear head. Shortcuts that change shape are a 1x1 convolution with batch norm
(``downsample.0`` / ``downsample.1``). Parameter and buffer names equal those of the reference
implementation (Cohen et al.'s ``archs/cifar_resnet.py``, used unchanged by CAT-RS), so its
checkpoints load as they are: ResNet-110 has 1,730,714 parameters for 10 classes.

The network has timm's model interface (:class:`~catrs_plugin.backbones.heads.TimmHead`):
``forward_features``, ``forward_head``, ``reset_classifier``, ``get_classifier``,
``num_features``, ``num_classes=0``, ``global_pool``, ``drop_rate`` and ``feature_info`` (the
stem and the three stages, for timm's ``features_only=True``).

Deviation: the reference pools with ``AvgPool2d(8)``, which only fits 32x32 inputs; here the
pooling is adaptive, identical on 32x32 and usable on other sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.backbones.heads import GlobalPool, TimmHead, check_drop_rate


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


class CifarResNet(TimmHead, nn.Module):
    """A ``depth``-layer CIFAR ResNet (``depth = 6n + 2``).

    Parameters
    ----------
    depth : int
        20, 32, 44, 56, 110, ... (``depth - 2`` divisible by 6).
    num_classes : int
        Size of the linear head; 0 for none (``forward`` then returns the pooled features).
    in_chans : int
        Input channels.
    global_pool : str
        Pooling of the last feature map, one of timm's: ``"avg"`` (the reference), ``"max"``,
        ``"avgmax"``, ``"catavgmax"`` (twice the features), or ``""`` (none; needs ``num_classes=0``).
    drop_rate : float
        Dropout before the classifier, in training mode (0 in the reference).
    """

    def __init__(self, depth: int = 110, num_classes: int = 10, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.drop_rate = check_drop_rate(drop_rate)
        self.num_features = 64
        self.conv1 = nn.Conv2d(in_chans, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        #: timm's feature description: what ``features_only=True`` returns, in forward order.
        self.feature_info = [dict(num_chs=16, reduction=1, module="relu"),
                             dict(num_chs=16, reduction=1, module="layer1"),
                             dict(num_chs=32, reduction=2, module="layer2"),
                             dict(num_chs=64, reduction=4, module="layer3")]
        self._set_head(GlobalPool(global_pool), num_classes)
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

    def _head_features(self, pool: GlobalPool, num_classes: int) -> int:
        if not pool.pool_type and num_classes:
            raise ValueError(f"global_pool='' (no pooling) leaves feature maps, which a linear classifier cannot "
                             f"take: pass num_classes=0 with it, got num_classes={num_classes}")
        return self.num_features * pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, ``(n, 64, h / 4, w / 4)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout (training mode) and the classifier; ``pre_logits`` stops before the classifier."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


def cifar_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (0.27 M parameters for 10 classes); ``kwargs``: ``global_pool``, ``drop_rate``."""
    return CifarResNet(20, num_classes, in_chans, **kwargs)


def cifar_resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (0.86 M parameters for 10 classes); ``kwargs``: ``global_pool``, ``drop_rate``."""
    return CifarResNet(56, num_classes, in_chans, **kwargs)


def cifar_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-110, the CAT-RS paper's CIFAR-10 model (1,730,714 parameters for 10 classes)."""
    return CifarResNet(110, num_classes, in_chans, **kwargs)
