"""The core's built-in registrations: the methods of the CAT-RS paper's table and Sun et al.'s (ICML 2025),
the digits CNN and the reference code's CIFAR ResNets and LeNet (:mod:`catrs_plugin.backbones`)."""

from __future__ import annotations

from catrs_plugin.backbones import BACKBONES, cifar_resnet, digits_cnn
from catrs_plugin.methods import CATRS, GAUSSIAN, Method
from catrs_plugin.methods.consistency import CONSISTENCY
from catrs_plugin.methods.macer import MACER
from catrs_plugin.methods.smoothadv import SMOOTHADV
from catrs_plugin.methods.smoothmix import SMOOTHMIX
from catrs_plugin.methods.stability import STABILITY
from catrs_plugin.methods.sun2025 import SUN2025
from catrs_plugin.plugins.hookspecs import hookimpl
from catrs_plugin.plugins.specs import ModelSpec


@hookimpl
def catrs_register_methods() -> list[Method]:
    return [GAUSSIAN, STABILITY, SMOOTHADV, MACER, CONSISTENCY, SMOOTHMIX, CATRS, SUN2025]


@hookimpl
def catrs_register_models() -> list[ModelSpec]:
    return [
        ModelSpec("digits_cnn", digits_cnn, "two-layer CNN for 8x8 grey images (scikit-learn digits)"),
        *(ModelSpec(factory.__name__, factory, (factory.__doc__ or "").strip()) for factory in BACKBONES),
        # The reference code's name for ResNet-110 trained on CIFAR-100 (the dataset supplies the 100 classes).
        ModelSpec("cifar100_resnet110", cifar_resnet.cifar_resnet110,
                  "CIFAR ResNet-110, the reference code's name for CIFAR-100"),
    ]
