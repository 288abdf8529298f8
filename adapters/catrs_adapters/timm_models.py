"""timm side of the backbones: our CIFAR ResNets and LeNet in timm's registry, ResNet-50 from timm.

Importing this module registers ``cifar_resnet20``, ``cifar_resnet56``, ``cifar_resnet110`` and
``lenet`` (from :mod:`catrs_plugin.backbones`) with :func:`timm.models.register_model`, so that
``timm.create_model("cifar_resnet110", num_classes=10)`` works. The ``adapters`` entry point
imports it, so loading the catrs registry does this too. The registration lives here, not in
the core, because the core does not import timm.

timm's ``resnet50`` has exactly the parameter names and computation of torchvision's, which the
reference code trained on ImageNet, so reference ResNet-50 checkpoints load into it.
"""

from __future__ import annotations

from typing import Any, Callable

import timm
from timm.models import register_model
from torch import nn

from catrs_plugin.backbones import BACKBONES
from catrs_plugin.specs import ModelSpec


#: Options ``timm.create_model`` hands every entry point that only concern hub weights (which
#: our backbones do not have); newer timm releases also pass ``cache_dir``.
_TIMM_FACTORY_OPTIONS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _timm_entrypoint(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A timm entry point (``fn(pretrained=False, **kwargs)``) named after ``factory``."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(
                f"{factory.__name__} has no pretrained weights in timm; load a checkpoint with "
                "catrs_plugin.load_checkpoint instead"
            )
        for key in _TIMM_FACTORY_OPTIONS:
            kwargs.pop(key, None)
        return factory(**kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = factory.__name__
    entrypoint.__doc__ = factory.__doc__
    return entrypoint


for _factory in BACKBONES:
    if not timm.is_model(_factory.__name__):
        register_model(_timm_entrypoint(_factory))


def resnet50(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """timm's ResNet-50 (torchvision's layout and computation), randomly initialised."""
    return timm.create_model("resnet50", pretrained=False, num_classes=num_classes, in_chans=in_chans)


RESNET50 = ModelSpec("resnet50", resnet50, "ResNet-50 for ImageNet from timm (torchvision's parameter names)")
