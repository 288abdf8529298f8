"""Backbones of the reference code: sizes, parameter names, computation, timm and catrs registries."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.backbones.cifar_resnet import CifarResNet, cifar_resnet20, cifar_resnet56, cifar_resnet110
from catrs_plugin.backbones.lenet import lenet
from catrs_plugin.plugins.registry import get_registry


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


def test_resnet50_starts_from_torchvision_initialisation():
    """The reference trains torchvision's resnet50: every batch norm scale 1 (timm's default zero_init_last zeroes
    the last one of each bottleneck), convolutions Kaiming-normal in fan-out mode, the classifier PyTorch's default."""
    import torchvision

    torch.manual_seed(0)
    ours = get_registry().create_model("resnet50", "imagenet")[1]
    reference = torchvision.models.resnet50()
    for name, block in ours.named_modules():
        if name.count(".") == 1 and name.startswith("layer"):  # the 16 bottlenecks
            assert torch.equal(block.bn3.weight, torch.ones_like(block.bn3.weight)), name
    theirs = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        if name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            assert torch.equal(parameter, theirs[name]), name  # all ones, as torchvision's
        elif parameter.numel() >= 4096:  # the same distribution: the spread agrees within sampling error
            assert parameter.std().item() == pytest.approx(theirs[name].std().item(), rel=0.1), name


TIMM_CHECK = """
import json, sys
import timm
out = {"ours_imported": sorted(m for m in sys.modules if m.startswith("catrs_plugin"))}
model = timm.create_model("cifar_resnet110", num_classes=10)
out["cifar_resnet110"] = [type(model).__name__, sum(p.numel() for p in model.parameters())]
out["configs"] = {}
from PIL import Image
for name, mode in (("cifar_resnet20", "RGB"), ("cifar_resnet56", "RGB"), ("cifar_resnet110", "RGB"),
                   ("cifar_resnet110.cifar100", "RGB"), ("lenet", "L")):
    model = timm.create_model(name).eval()
    config = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**config)(Image.new(mode, config["input_size"][:0:-1]))[None]
    out["configs"][name] = [config, model.pretrained_cfg["num_classes"], list(x.shape[1:]), model(x).shape[1]]
out["pretrained"] = timm.list_pretrained("cifar_resnet*") + timm.list_pretrained("lenet*")
print(json.dumps(out))
"""


def test_timm_knows_our_models_right_after_import_timm_with_their_data_configs():
    """A fresh interpreter that imports nothing of ours: the start-up hook registers the models when timm loads."""
    result = subprocess.run([sys.executable, "-c", TIMM_CHECK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["ours_imported"] == []  # registration is cheap: the networks' code loads on create_model
    assert out["cifar_resnet110"] == ["CifarResNet", 1_730_714]
    assert out["pretrained"] == []  # no weights are hosted
    datasets = get_registry().datasets
    expected = {"cifar_resnet20": "cifar10", "cifar_resnet56": "cifar10", "cifar_resnet110": "cifar10",
                "cifar_resnet110.cifar100": "cifar100", "lenet": "mnist"}
    for name, dataset in expected.items():
        spec = datasets[dataset]
        config, num_classes, transformed, outputs = out["configs"][name]
        assert config == {"input_size": list(spec.input_shape), "interpolation": "bilinear", "mean": list(spec.mean),
                          "std": list(spec.std), "crop_pct": 1.0, "crop_mode": "center"}, name
        assert transformed == list(spec.input_shape), name  # timm's eval transform keeps the image size
        assert num_classes == outputs == spec.num_classes, name


def test_timm_entry_points_take_timm_arguments():
    """The rest of timm's interface (pretrained, heads, features) is tested in test_timm_conventions.py."""
    import timm

    import catrs_adapters  # noqa: F401  (installs the hook where Python did not read our .pth file)

    model = timm.create_model("cifar_resnet56", num_classes=100, in_chans=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 100
