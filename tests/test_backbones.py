"""Backbones of the reference code: sizes, parameter names, computation, timm and catrs registries."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.backbones.cifar_resnet import CifarResNet, cifar_resnet20, cifar_resnet56, cifar_resnet110
from catrs_plugin.backbones.lenet import lenet
from catrs_plugin.registry import get_registry


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_sizes_match_the_reference_and_the_resnet_paper():
    assert _parameters(cifar_resnet110(num_classes=10)) == 1_730_714  # the reference code's ResNet-110
    assert _parameters(lenet(num_classes=10)) == 431_080  # the reference code's LeNet
    assert round(_parameters(cifar_resnet20()) / 1e6, 2) == 0.27  # He et al. (2016), Table 6
    assert round(_parameters(cifar_resnet56()) / 1e6, 2) == 0.86
    assert cifar_resnet110(num_classes=100).fc.out_features == 100
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=21)


def _randomise_batch_norm(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.1, generator=generator)


def _bn(x, state, prefix):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False)


def _reference_cifar_resnet(state, x, blocks):
    """The reference architecture written out from its parameter names, independent of our modules."""
    out = F.relu(_bn(F.conv2d(x, state["conv1.weight"], padding=1), state, "bn1"))
    for stage in (1, 2, 3):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            h = F.relu(_bn(F.conv2d(out, state[f"{p}.conv1.weight"], stride=stride, padding=1), state, f"{p}.bn1"))
            h = _bn(F.conv2d(h, state[f"{p}.conv2.weight"], padding=1), state, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                out = _bn(F.conv2d(out, state[f"{p}.downsample.0.weight"], stride=stride), state, f"{p}.downsample.1")
            out = F.relu(h + out)
    out = F.avg_pool2d(out, 8).flatten(1)
    return F.linear(out, state["fc.weight"], state["fc.bias"])


def test_cifar_resnet_computes_the_reference_architecture():
    generator = torch.Generator().manual_seed(0)
    model = cifar_resnet20().eval()
    _randomise_batch_norm(model, generator)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_cifar_resnet(model.state_dict(), x, blocks=3))


def test_lenet_computes_the_reference_architecture():
    model = lenet().eval()
    state = model.state_dict()
    x = torch.rand(3, 1, 28, 28)
    h = F.max_pool2d(F.relu(F.conv2d(x, state["conv1.weight"], state["conv1.bias"])), 2, 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, state["conv2.weight"], state["conv2.bias"])), 2, 2)
    h = F.relu(F.linear(h.view(-1, 800), state["fc1.weight"], state["fc1.bias"]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), F.linear(h, state["fc2.weight"], state["fc2.bias"]))


def test_registered_with_normalisation_and_reference_key_names():
    registry = get_registry()
    for arch in ("cifar_resnet20", "cifar_resnet56", "cifar_resnet110", "cifar100_resnet110", "lenet", "resnet50"):
        assert arch in registry.models
    model = registry.create_model("cifar_resnet110", "cifar10")
    keys = list(model.state_dict())
    assert keys[0] == "1.conv1.weight" and "1.layer2.0.downsample.0.weight" in keys
    assert model[0].mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    assert registry.create_model("cifar100_resnet110", "cifar100")[1].fc.out_features == 100
    assert registry.create_model("lenet", "mnist")[1].conv1.in_channels == 1


def test_resnet50_has_torchvision_parameter_names():
    import torchvision

    ours = get_registry().create_model("resnet50", "imagenet")
    assert list(ours.state_dict()) == ["1." + key for key in torchvision.models.resnet50().state_dict()]


def test_timm_create_model_after_the_registry_loads_in_a_fresh_interpreter():
    code = (
        "import timm\n"
        "assert not timm.is_model('cifar_resnet110')\n"
        "from catrs_plugin import get_registry\n"
        "get_registry()\n"
        "m = timm.create_model('cifar_resnet110', num_classes=10)\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
        "print(timm.create_model('lenet', num_classes=10).fc2.out_features)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CifarResNet", "1730714", "10"]


def test_timm_entry_points_take_timm_arguments_and_refuse_pretrained():
    import timm

    import catrs_adapters.timm_models  # noqa: F401  (registers the backbones)

    model = timm.create_model("cifar_resnet56", num_classes=100, in_chans=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 100
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("cifar_resnet20", pretrained=True)
