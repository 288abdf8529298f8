"""Backbones of the reference code, as plain torch modules (no normalisation, inputs in [0, 1]
are normalised by the :class:`~catrs_plugin.backbones.normalize.NormalizeLayer` in front of them).

One module per family, each with a factory per architecture: :mod:`.cifar_resnet`
(``cifar_resnet20/56/110`` for 32x32 images) and :mod:`.lenet` (``lenet``). Their parameter
names equal the reference implementation's, so its checkpoints load unchanged. The same
factories are registered in timm's model registry by :mod:`catrs_adapters.timm_models` (the
core does not import timm), and the ImageNet ResNet-50 comes from timm there.
"""

from __future__ import annotations

from catrs_plugin.backbones import cifar_resnet, lenet
from catrs_plugin.backbones.cifar_resnet import CifarResNet
from catrs_plugin.backbones.lenet import LeNet
from catrs_plugin.plugins.specs import ModelSpec

#: The factories registered under their own names, in our registry and in timm's.
BACKBONES = (cifar_resnet.cifar_resnet20, cifar_resnet.cifar_resnet56, cifar_resnet.cifar_resnet110, lenet.lenet)

#: Model specs of the backbones, plus ``cifar100_resnet110``: the reference code's name for
#: ResNet-110 trained on CIFAR-100 (the dataset supplies the 100 classes).
BACKBONE_SPECS = (
    *(ModelSpec(factory.__name__, factory, (factory.__doc__ or "").strip()) for factory in BACKBONES),
    ModelSpec("cifar100_resnet110", cifar_resnet.cifar_resnet110,
              "CIFAR ResNet-110, the reference code's name for CIFAR-100"),
)

__all__ = ["BACKBONES", "BACKBONE_SPECS", "CifarResNet", "LeNet"]
