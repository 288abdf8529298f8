"""Entry-point module of the adapters: registers the bundled datasets, the timm ResNet-50 and ART's L2 PGD.

Importing it also registers our backbones in timm's model registry (:mod:`catrs_adapters.timm_models`).
"""

from __future__ import annotations

from catrs_adapters.art.empirical import ART_L2_PGD
from catrs_adapters.datasets import CIFAR10, CIFAR10C, CIFAR100, DIGITS, IMAGENET, MNIST
from catrs_adapters.timm_models import RESNET50
from catrs_plugin.hookspecs import hookimpl
from catrs_plugin.specs import AttackSpec, DatasetSpec, ModelSpec


@hookimpl
def catrs_register_datasets() -> list[DatasetSpec]:
    return [DIGITS, CIFAR10, CIFAR100, CIFAR10C, IMAGENET, MNIST]


@hookimpl
def catrs_register_models() -> list[ModelSpec]:
    return [RESNET50]


@hookimpl
def catrs_register_attacks() -> list[AttackSpec]:
    return [ART_L2_PGD]
