"""Classifier heads with timm's interface, without timm: global pooling, dropout and the linear layer.

timm's models share an interface that timm's tools (``timm.create_model`` arguments,
``features_only``, ``reset_classifier``, training scripts) rely on: ``forward_features``,
``forward_head(x, pre_logits=False)``, ``get_classifier``, ``reset_classifier``,
``num_features``, ``head_hidden_size``, ``num_classes=0`` for a network without classifier,
``global_pool`` and ``drop_rate``. :class:`~catrs_plugin.backbones.cifar_resnet.CifarResNet` and
:class:`~catrs_plugin.backbones.lenet.LeNet` provide it through :class:`TimmHead`; the pooling
types and their meaning are those of timm's ``SelectAdaptivePool2d``. None of the modules here
holds parameters or buffers, so the networks' state-dict keys stay the reference code's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: timm's global pooling types: average, maximum, their mean, both side by side, and none ("").
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class GlobalPool(nn.Module):
    """Global pooling of ``(n, c, h, w)`` feature maps to ``(n, c)`` (``(n, 2c)`` for ``"catavgmax"``).

    Parameters
    ----------
    pool_type : str
        One of :data:`POOL_TYPES`; ``""`` passes the map through unchanged (no pooling, no flattening).
    """

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {', '.join(map(repr, POOL_TYPES))}, got {pool_type!r}")
        self.pool_type = pool_type

    def feat_mult(self) -> int:
        """Pooled features per input channel (2 for ``"catavgmax"``, else 1), as timm's pooling layers report."""
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        average, maximum = F.adaptive_avg_pool2d(x, 1).flatten(1), F.adaptive_max_pool2d(x, 1).flatten(1)
        return 0.5 * (average + maximum) if self.pool_type == "avgmax" else torch.cat((average, maximum), 1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


def linear_classifier(in_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear(in_features, num_classes)``, or ``nn.Identity()`` for ``num_classes=0`` (timm's "no classifier")."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
    return nn.Linear(in_features, num_classes) if num_classes else nn.Identity()


def check_drop_rate(drop_rate: float) -> float:
    """Return ``drop_rate`` as a float if it lies in [0, 1)."""
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}")
    return float(drop_rate)


class TimmHead:
    """timm's head interface, for a network whose ``forward`` is ``forward_head(forward_features(x))``.

    The network defines ``forward_features``, ``forward_head(x, pre_logits=False)`` and
    ``num_features``, builds its head with :meth:`_set_head`, and says in :meth:`_head_features`
    how many features its classifier takes with a given pooling.
    """

    #: Attribute holding the classifier (the ``classifier`` entry of timm's pretrained config).
    classifier_name = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The classifier module (``nn.Identity`` without classifier), or its attribute name."""
        return self.classifier_name if name_only else getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, randomly initialised classifier for ``num_classes`` (0: none), as timm's ``reset_classifier``.

        ``global_pool`` changes the pooling (``None`` keeps it).
        """
        self._set_head(self.global_pool if global_pool is None else GlobalPool(global_pool), num_classes)
        self.global_pool.train(self.training)
        self.get_classifier().train(self.training)

    def _set_head(self, pool: GlobalPool, num_classes: int) -> None:
        """Install ``pool`` and a new classifier: what the constructor and :meth:`reset_classifier` build."""
        features = self._head_features(pool, num_classes)
        classifier = linear_classifier(features, num_classes)
        self.global_pool = pool
        self.num_classes = num_classes
        self.head_hidden_size = features
        setattr(self, self.classifier_name, classifier)

    def _head_features(self, pool: GlobalPool, num_classes: int) -> int:
        """Inputs of the classifier after ``pool`` (``ValueError`` where the head cannot work)."""
        raise NotImplementedError
