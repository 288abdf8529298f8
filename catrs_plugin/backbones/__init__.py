"""Network architectures as plain torch modules: the reference code's CIFAR ResNets and LeNet, the digits CNN,
and the in-model normalisation layer. Imports torch only, nothing else of catrs_plugin.

Models see inputs in [0, 1]: the :class:`~catrs_plugin.backbones.normalize.NormalizeLayer` in front
of every network normalises them. One module per family, each with a factory per architecture:
:mod:`.cifar_resnet` (``cifar_resnet20/56/110`` for 32x32 images), :mod:`.lenet` (``lenet``) and
:mod:`.digits` (``digits_cnn``). The reference networks' parameter names equal the reference
implementation's, so its checkpoints load unchanged. The same factories are registered in timm's
model registry by :mod:`catrs_adapters.timm_models` (the core does not import timm), and the
ImageNet ResNet-50 comes from timm there; the CIFAR ResNets and LeNet have timm's model
interface (``forward_features``, ``forward_head``, ``reset_classifier`` ...), from :mod:`.heads`.
"""

from __future__ import annotations

from catrs_plugin.backbones import cifar_resnet, lenet
from catrs_plugin.backbones.cifar_resnet import CifarResNet
from catrs_plugin.backbones.digits import digits_cnn
from catrs_plugin.backbones.lenet import LeNet
from catrs_plugin.backbones.normalize import NormalizeLayer

#: The reference code's factories, registered under their own names in our registry and in timm's.
BACKBONES = (cifar_resnet.cifar_resnet20, cifar_resnet.cifar_resnet56, cifar_resnet.cifar_resnet110, lenet.lenet)

__all__ = ["BACKBONES", "CifarResNet", "LeNet", "NormalizeLayer", "digits_cnn"]
