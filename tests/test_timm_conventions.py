"""Our timm models have timm's model interface: each check runs on timm's own resnet18 and on ours.

What holds for ``timm.create_model("resnet18", ...)`` must hold for ``cifar_resnet20`` (the family
of ``cifar_resnet56`` and ``cifar_resnet110``) and for ``lenet``. The table in
docs/guides/checkpoints.rst ("timm's conventions") lists what these tests keep true.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import FeatureListNet
from torch import nn

import catrs_adapters  # noqa: F401  (installs the hook where Python did not read our .pth file)
from catrs_plugin.backbones.cifar_resnet import cifar_resnet20
from catrs_plugin.backbones.lenet import lenet
from catrs_plugin.train.checkpoint import save_checkpoint

#: Model name -> input size of the checks (small: the checks are about shapes and wiring).
MODELS = {"resnet18": (3, 64, 64), "cifar_resnet20": (3, 32, 32), "lenet": (1, 28, 28)}
OURS = ["cifar_resnet20", "lenet"]


def create(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


def inputs(name: str, n: int = 2) -> torch.Tensor:
    return torch.rand(n, *MODELS[name], generator=torch.Generator().manual_seed(1))


def explicit_pool(features: torch.Tensor, pool_type: str) -> torch.Tensor:
    """timm's pooling types written out: mean and max over the spatial axes."""
    average, maximum = features.mean(dim=(2, 3)), features.amax(dim=(2, 3))
    return {"avg": average, "max": maximum, "avgmax": 0.5 * (average + maximum),
            "catavgmax": torch.cat([average, maximum], 1), "": features}[pool_type]


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_is_forward_head_of_forward_features(name):
    model, x = create(name), inputs(name)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(features), model(x))
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.head_hidden_size)
        torch.testing.assert_close(model.get_classifier()(pre_logits), model(x))
    assert model.get_classifier(name_only=True) == model.pretrained_cfg["classifier"]
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == model.num_classes


@pytest.mark.parametrize("name", list(MODELS))
def test_num_classes_0_returns_the_pooled_features_and_has_no_classifier(name):
    whole, bare, x = create(name), create(name, num_classes=0), inputs(name)
    assert isinstance(bare.get_classifier(), nn.Identity) and bare.num_classes == 0
    classifier = whole.get_classifier(name_only=True)
    assert set(bare.state_dict()) == {k for k in whole.state_dict() if not k.startswith(classifier + ".")}
    bare.load_state_dict({k: v for k, v in whole.state_dict().items() if k in bare.state_dict()})
    with torch.no_grad():
        torch.testing.assert_close(bare(x), whole.forward_head(whole.forward_features(x), pre_logits=True))
    assert bare(x).shape == (2, bare.head_hidden_size)


@pytest.mark.parametrize("name", list(MODELS))
def test_reset_classifier_replaces_the_head(name):
    model, x = create(name), inputs(name)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5 and model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model(x).shape == (2, model.head_hidden_size)
    model.train()
    model.reset_classifier(3)
    assert model.get_classifier().training  # the new head takes the model's mode, as in timm


@pytest.mark.parametrize("name", ["resnet18", "cifar_resnet20"])
@pytest.mark.parametrize("pool_type", ["avg", "max", "avgmax", "catavgmax"])
def test_global_pool_types_pool_the_last_feature_map(name, pool_type):
    model, x = create(name, global_pool=pool_type), inputs(name)
    with torch.no_grad():
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), explicit_pool(features, pool_type))
    multiplier = 2 if pool_type == "catavgmax" else 1
    assert model.get_classifier().in_features == model.num_features * multiplier
    if name in OURS:  # timm's own resnet18 reports it so from timm 1.0.10 on (1.0.9, RobustBench's pin, does not)
        assert model.head_hidden_size == model.num_features * multiplier
    model.reset_classifier(4, "max")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), explicit_pool(features, "max"))


@pytest.mark.parametrize("name", ["resnet18", "cifar_resnet20"])
def test_no_global_pool_with_num_classes_0_returns_the_feature_map(name):
    model, x = create(name, global_pool="", num_classes=0), inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x))


def test_no_global_pool_with_a_classifier_is_refused_at_creation():
    # timm's resnet18 accepts it and fails at the first forward pass; ours says why at once
    with pytest.raises(ValueError, match="global_pool='' .* pass num_classes=0"):
        timm.create_model("cifar_resnet20", global_pool="")
    with pytest.raises(ValueError, match="global_pool must be one of 'avg', 'max'"):
        timm.create_model("cifar_resnet20", global_pool="nope")


@pytest.mark.parametrize("pool_type", ["avg", "catavgmax"])
def test_lenet_global_pool_pools_the_map_before_fc1(pool_type):
    model = create("lenet", global_pool=pool_type)
    features = model.forward_features(inputs("lenet"))
    torch.testing.assert_close(model.global_pool(features), explicit_pool(features, pool_type))
    assert model.fc1.in_features == 50 * (2 if pool_type == "catavgmax" else 1)
    assert create("lenet").fc1.in_features == 800  # the reference: the 50 x 4 x 4 map, flattened
    with pytest.raises(ValueError, match="fc1 is sized for global_pool='avg'"):
        create("lenet", global_pool="avg").reset_classifier(10, "max")


@pytest.mark.parametrize("name", list(MODELS))
def test_drop_rate_drops_pre_logits_features_in_training_mode_only(name):
    model, x = create(name, drop_rate=0.5), inputs(name, n=8)
    plain = create(name)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), plain.forward_head(features))  # eval: no dropout
        model.train()
        torch.manual_seed(3)
        dropped = model.forward_head(features, pre_logits=True)
        torch.manual_seed(3)
        expected = F.dropout(plain.forward_head(features, pre_logits=True), p=0.5, training=True)
    torch.testing.assert_close(dropped, expected)
    assert model.drop_rate == 0.5


@pytest.mark.parametrize("name", list(MODELS))
def test_features_only_returns_the_stages_of_feature_info(name):
    model, x = create(name, features_only=True), inputs(name)
    assert isinstance(model, FeatureListNet)
    with torch.no_grad():
        outputs = model(x)
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(outputs) == len(channels) >= 2
    # reduction is the stride: an input larger by d pixels gives maps larger by d / reduction
    d = max(reductions)
    with torch.no_grad():
        larger = model(torch.rand(2, x.shape[1], x.shape[2] + d, x.shape[3] + d))
    for output, bigger, channel, reduction in zip(outputs, larger, channels, reductions):
        assert output.shape[1] == channel and bigger.shape[-1] - output.shape[-1] == d // reduction
    chosen = create(name, features_only=True, out_indices=(1,))
    with torch.no_grad():
        (output,) = chosen(x)
    torch.testing.assert_close(output, outputs[1])
    whole = create(name)
    with torch.no_grad():
        torch.testing.assert_close(outputs[-1], whole.forward_features(x))  # the last stage is forward_features


def test_pretrained_true_without_weights_raises_timms_error():
    with pytest.raises(RuntimeError, match=r"^No pretrained weights exist for resnet50t\. Use `pretrained=False`"):
        timm.create_model("resnet50t", pretrained=True)  # one of timm's models without weights
    for name in ("cifar_resnet20", "cifar_resnet110.cifar100", "lenet"):
        architecture = name.split(".")[0]
        with pytest.raises(RuntimeError, match=rf"^No pretrained weights exist for {architecture}\. Use `pretrained="):
            timm.create_model(name, pretrained=True)
    assert timm.list_pretrained("cifar_resnet*") + timm.list_pretrained("lenet*") == []


def _assert_loaded(model: nn.Module, network: nn.Module, skip: str | None = None) -> None:
    expected = network.state_dict()
    for key, value in model.state_dict().items():
        if skip is None or not key.startswith(skip):
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def test_pretrained_cfg_overlay_file_loads_a_bare_state_dict_as_for_timms_resnet18(tmp_path):
    for name in ("resnet18", "cifar_resnet20", "lenet"):
        torch.manual_seed(5)
        source = timm.create_model(name)
        path = tmp_path / f"{name}.pth"
        torch.save(source.state_dict(), path)
        loaded = create(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        _assert_loaded(loaded, source)
        classifier = source.get_classifier(name_only=True)
        other = create(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3)
        assert other.get_classifier().out_features == 3  # the classifier is new, the rest loaded
        _assert_loaded(other, source, skip=classifier + ".")


def _reference_checkpoint(path, arch: str, network: nn.Module) -> None:
    """The reference scripts' format: Sequential(NormalizeLayer, network), no batch-norm counters."""
    state = {f"1.{key}": value for key, value in network.state_dict().items() if "num_batches_tracked" not in key}
    torch.save({"epoch": 150, "arch": arch, "state_dict": state, "optimizer": {}}, path)


def test_pretrained_cfg_overlay_file_loads_reference_checkpoints(tmp_path):
    for arch, factory in (("cifar_resnet20", cifar_resnet20), ("lenet", lenet)):
        torch.manual_seed(2)
        network = factory()
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
        path = tmp_path / f"{arch}.pth.tar"
        _reference_checkpoint(path, arch, network)
        model = create(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        _assert_loaded(model, network)
        x = inputs(arch)
        with torch.no_grad():
            torch.testing.assert_close(model(x), network.eval()(x))
        one_channel = create(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), in_chans=1)
        assert one_channel.conv1.in_channels == 1  # timm adapts the first convolution, as for its own models


def test_pretrained_cfg_overlay_file_loads_our_training_checkpoints(tmp_path):
    from catrs_plugin.methods.gaussian import GAUSSIAN
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.loop import TensorData, TrainConfig, train

    torch.manual_seed(0)
    model = get_registry().create_model("cifar_resnet20", "cifar10")
    path = tmp_path / "ours.pt"
    data = TensorData(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    train(model, GAUSSIAN, GAUSSIAN.hyperparameters(0.25), 0.25, data,
          TrainConfig(epochs=1, batch_size=8, checkpoint=str(path), progress=False),
          checkpoint_fields={"arch": "cifar_resnet20", "dataset": "cifar10"})
    loaded = create("cifar_resnet20", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_loaded(loaded, model[1])


def test_save_checkpoint_files_of_the_registry_model_load_too(tmp_path):
    from catrs_plugin.plugins.registry import get_registry

    torch.manual_seed(4)
    model = get_registry().create_model("lenet", "mnist")
    path = tmp_path / "lenet.pt"
    save_checkpoint(path, {"arch": "lenet", "dataset": "mnist", "state_dict": model.state_dict()})
    _assert_loaded(create("lenet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))), model[1])


@pytest.mark.parametrize("name,factory", [("cifar_resnet20", cifar_resnet20), ("lenet", lenet)])
def test_state_dict_keys_stay_the_reference_codes(name, factory):
    assert list(create(name).state_dict()) == list(factory().state_dict())
    assert all(not key.startswith(("global_pool", "act", "pool")) for key in factory().state_dict())
