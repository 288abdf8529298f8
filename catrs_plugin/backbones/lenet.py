"""LeNet for 28x28 grey images, laid out like the reference code's ``archs/lenet.py``.

Two 5x5 convolutions (20 and 50 channels), each followed by ReLU and 2x2 max pooling, then
linear layers of 500 units and ``num_classes`` outputs: 431,080 parameters for 10 classes.

The network has timm's model interface (:class:`~catrs_plugin.backbones.heads.TimmHead`):
``forward_features`` is the convolutional part (``num_features`` = 50 channels),
``forward_head`` flattens (or pools, with ``global_pool``), applies ``fc1`` and its ReLU
(``head_hidden_size`` = 500, what ``pre_logits=True`` and ``num_classes=0`` return), dropout
(``drop_rate``) and the classifier ``fc2``; ``feature_info`` names the two pooled stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.backbones.heads import GlobalPool, TimmHead, check_drop_rate

#: Units of the hidden linear layer ``fc1``.
HIDDEN = 500


class LeNet(TimmHead, nn.Module):
    """LeNet-5 variant of the reference code (``conv1``, ``conv2``, ``fc1``, ``fc2``).

    Parameters
    ----------
    num_classes : int
        Size of the last layer; 0 for none (``forward`` then returns ``fc1``'s 500 features).
    in_chans : int
        Input channels (1 for MNIST).
    global_pool : str
        ``""`` (the reference: the 50 x 4 x 4 map of a 28 x 28 input is flattened into ``fc1``)
        or one of timm's pooling types ``"avg"``, ``"max"``, ``"avgmax"``, ``"catavgmax"``, which
        pool the map to 50 (100) features first, for other input sizes; ``fc1`` is sized for it.
    drop_rate : float
        Dropout before the classifier ``fc2``, in training mode (0 in the reference).
    """

    classifier_name = "fc2"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, global_pool: str = "", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop_rate = check_drop_rate(drop_rate)
        self.num_features = 50
        self.conv1 = nn.Conv2d(in_chans, 20, 5)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, self.num_features, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        #: timm's feature description: what ``features_only=True`` returns, in forward order.
        self.feature_info = [dict(num_chs=20, reduction=2, module="pool1"),
                             dict(num_chs=self.num_features, reduction=4, module="pool2")]
        self.global_pool = pool = GlobalPool(global_pool)
        flattened = 4 * 4 * self.num_features if not pool.pool_type else self.num_features * pool.feat_mult()
        self.fc1 = nn.Linear(flattened, HIDDEN)
        self.act3 = nn.ReLU()
        self._set_head(pool, num_classes)

    def _head_features(self, pool: GlobalPool, num_classes: int) -> int:
        if pool.pool_type != self.global_pool.pool_type:
            raise ValueError(f"LeNet's fc1 is sized for global_pool={self.global_pool.pool_type!r}; create the "
                             f"network with global_pool={pool.pool_type!r} instead of resetting to it")
        return HIDDEN

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: ``(n, 50, 4, 4)`` for 28 x 28 inputs."""
        x = self.pool1(self.act1(self.conv1(x)))
        return self.pool2(self.act2(self.conv2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten (or pool), ``fc1`` and ReLU, dropout (training mode), ``fc2``; ``pre_logits`` stops before it."""
        x = self.act3(self.fc1(torch.flatten(self.global_pool(x), 1)))
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc2(x)


def lenet(num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet:
    """LeNet for MNIST-sized inputs (431,080 parameters for 10 classes); ``kwargs``: ``global_pool``, ``drop_rate``."""
    return LeNet(num_classes, in_chans, **kwargs)
