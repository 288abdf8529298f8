"""Our backbones in timm's model registry, registered the way timm registers its own models.

``cifar_resnet20``, ``cifar_resnet56``, ``cifar_resnet110`` (:mod:`catrs_plugin.backbones.cifar_resnet`)
and ``lenet`` (:mod:`catrs_plugin.backbones.lenet`) are timm entry points decorated with
:func:`timm.models.register_model`, built by :func:`timm.models.build_model_with_cfg` from a
pretrained config (``default_cfgs``) that states what the network is trained on:

============================  ===========  ===============================  =========
model (tag)                   input size   mean / std                       classes
============================  ===========  ===============================  =========
``cifar_resnet*`` (cifar10)   3 x 32 x 32  CIFAR-10's (the reference code)  10
``cifar_resnet*.cifar100``    3 x 32 x 32  CIFAR-100's                      100
``lenet`` (mnist)             1 x 28 x 28  0 / 1 (MNIST unnormalised)       10
============================  ===========  ===============================  =========

so ``timm.data.resolve_data_config({}, model=model)`` gives these, not ImageNet's 224 px, and
``timm.create_model("cifar_resnet110.cifar100")`` builds the 100-class network. The networks take
normalised inputs; :meth:`catrs_plugin.plugins.registry.Registry.create_model` puts the normalisation
in front of them for smoothing. They have timm's model interface (``forward_features``,
``forward_head``, ``reset_classifier``, ``num_classes=0``, ``global_pool``, ``drop_rate``,
``features_only=True``; see :mod:`catrs_plugin.backbones.heads`).

No weights are hosted: ``pretrained=True`` alone raises timm's own error for models without
weights. timm's local-weights route loads a checkpoint written by ``catrs train`` or by the
reference training scripts, or a bare state dict of the network
(:func:`checkpoint_filter_fn` maps their keys)::

    timm.create_model("cifar_resnet110", pretrained=True,
                      pretrained_cfg_overlay=dict(file="checkpoint.pth.tar"))

The start-up hook (:mod:`catrs_adapters.hook`) imports this module right after ``timm``, so
the names work in any fresh interpreter. It is cheap: it imports only timm and our statistics;
the networks' code is imported when a model is created. It lives in the adapters because the
core does not import timm.

timm's ``resnet50`` has exactly the parameter names and computation of torchvision's, which the
reference code trained on ImageNet, so reference ResNet-50 checkpoints load into it
(:func:`resnet50`). It is built with ``zero_init_last=False``, so that training from scratch starts
where the reference's ``torchvision.models.resnet50()`` starts: timm's default sets the scale of
the last batch norm of every bottleneck to 0 (the "zero-init residual" trick), torchvision's
leaves it at 1; the other initialisations (Kaiming-normal convolutions in fan-out mode, the
classifier's PyTorch default) are the same in both.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from timm.models import build_model_with_cfg, create_model, generate_default_cfgs, register_model
from torch import nn

from catrs_adapters.normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, MNIST_MEAN, MNIST_STD

_REFERENCE = "https://github.com/locuslab/smoothing"


def _cifar(mean: tuple[float, ...], std: tuple[float, ...], num_classes: int) -> dict[str, Any]:
    return dict(input_size=(3, 32, 32), mean=mean, std=std, num_classes=num_classes, crop_pct=1.0,
                interpolation="bilinear", first_conv="conv1", classifier="fc", paper_ids="arXiv:1512.03385",
                origin_url=_REFERENCE)


#: timm pretrained configs (no weights: they describe the data), one per model and data set tag.
default_cfgs = generate_default_cfgs({
    **{f"cifar_resnet{depth}.{tag}": _cifar(*stats)
       for depth in (20, 56, 110)
       for tag, stats in (("cifar10", (CIFAR10_MEAN, CIFAR10_STD, 10)),
                          ("cifar100", (CIFAR100_MEAN, CIFAR100_STD, 100)))},
    "lenet.mnist": dict(input_size=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD, num_classes=10, crop_pct=1.0,
                        interpolation="bilinear", first_conv="conv1", classifier="fc2", origin_url=_REFERENCE),
})


#: ``features_only=True`` returns every stage of ``feature_info`` unless ``out_indices`` says otherwise.
_OUT_INDICES = {"lenet": (0, 1)}


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our and the reference code's checkpoints as the bare network's state dict (timm's ``pretrained_filter_fn``).

    Both hold ``Sequential(NormalizeLayer, network)``, so every key of the network starts with
    ``1.`` (timm has already taken the file's ``state_dict`` entry); the reference's
    ``DataParallel`` segments and missing batch-norm counters are mapped as
    :func:`catrs_plugin.load_checkpoint` maps them. A state dict of the bare network passes unchanged.
    """
    from catrs_plugin.train.checkpoint import reference_keys

    if state_dict and all(key.startswith("1.") for key in state_dict):
        state_dict = {key[2:]: value for key, value in state_dict.items()}
    return reference_keys(state_dict, model.state_dict())


def _create(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    from catrs_plugin.backbones import BACKBONES

    factory = {backbone.__name__: backbone for backbone in BACKBONES}[variant]
    return build_model_with_cfg(factory, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=_OUT_INDICES.get(variant, (0, 1, 2, 3))), **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm entry point of :func:`catrs_plugin.backbones.cifar_resnet.cifar_resnet20`."""
    return _create("cifar_resnet20", pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm entry point of :func:`catrs_plugin.backbones.cifar_resnet.cifar_resnet56`."""
    return _create("cifar_resnet56", pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm entry point of :func:`catrs_plugin.backbones.cifar_resnet.cifar_resnet110`."""
    return _create("cifar_resnet110", pretrained, **kwargs)


@register_model
def lenet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm entry point of :func:`catrs_plugin.backbones.lenet.lenet`."""
    return _create("lenet", pretrained, **kwargs)


def resnet50(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """timm's ResNet-50 (torchvision's layout and computation), initialised as torchvision's (``zero_init_last=False``)."""
    return create_model("resnet50", pretrained=False, num_classes=num_classes, in_chans=in_chans, zero_init_last=False)
