"""Entry-point module of the adapters: registers the bundled datasets, the timm ResNet-50 and ART's L2 PGD.

Importing it (as loading the ``catrs`` registry does) also installs the start-up hook of
:mod:`catrs_adapters.hook` where Python did not, so timm knows our backbones from then on.
"""

from __future__ import annotations

from catrs_adapters.art.empirical import ART_L2_PGD
from catrs_adapters.datasets import CIFAR10, CIFAR10C, CIFAR100, DIGITS, IMAGENET, MNIST
from catrs_adapters.timm_models import resnet50
from catrs_plugin.plugins.hookspecs import hookimpl
from catrs_plugin.plugins.specs import AttackSpec, DatasetSpec, ModelSpec

RESNET50 = ModelSpec("resnet50", resnet50, "ResNet-50 for ImageNet from timm (torchvision's parameter names)")


@hookimpl
def catrs_register_datasets() -> list[DatasetSpec]:
    return [DIGITS, CIFAR10, CIFAR100, CIFAR10C, IMAGENET, MNIST]


@hookimpl
def catrs_register_models() -> list[ModelSpec]:
    return [RESNET50]


@hookimpl
def catrs_register_attacks() -> list[AttackSpec]:
    return [ART_L2_PGD]
