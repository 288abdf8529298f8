"""Checkpoints written by the reference training scripts load and compute the same logits."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from catrs_plugin.backbones.cifar_resnet import cifar_resnet20, cifar_resnet110
from catrs_plugin.backbones.lenet import lenet
from catrs_plugin.cli import main
from catrs_plugin.results.tsv import read_certify_results
from catrs_plugin.train.checkpoint import load_checkpoint


class ReferenceNormalize(nn.Module):
    """Like the reference code's NormalizeLayer: plain tensor attributes, nothing in the state dict."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means), torch.tensor(sds)

    def forward(self, x):
        return (x - self.means.view(1, -1, 1, 1)) / self.sds.view(1, -1, 1, 1)


CIFAR10 = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _perturb(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics, so that a wrong normalisation or mode would show in the logits."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.bias.data.normal_(0, 0.2, generator=generator)
    return model.eval()


def _save_reference(path, arch, model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 150, "arch": arch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
               path)


@pytest.mark.parametrize("arch,factory", [("cifar_resnet20", cifar_resnet20), ("cifar_resnet110", cifar_resnet110)])
def test_cifar_resnet_reference_checkpoint(tmp_path, arch, factory):
    torch.manual_seed(0)
    original = nn.Sequential(ReferenceNormalize(*CIFAR10), _perturb(factory(num_classes=10)))
    path = tmp_path / "checkpoint.pth.tar"
    _save_reference(path, arch, original)
    assert "1.layer2.0.downsample.0.weight" in torch.load(path, weights_only=True)["state_dict"]
    loaded = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x))
    assert not loaded.training


def test_lenet_reference_checkpoint_without_normalisation(tmp_path):
    torch.manual_seed(0)
    original = nn.Sequential(nn.Identity(), lenet(num_classes=10)).eval()  # the reference's MNIST layout
    path = tmp_path / "lenet.pth.tar"
    _save_reference(path, "lenet", original)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(x), original(x))


def test_dataparallel_torchvision_resnet50_reference_checkpoint(tmp_path):
    torch.manual_seed(0)
    network = _perturb(torchvision.models.resnet50())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # on the CPU, before DataParallel moves the network to the GPU (when there is one)
        expected = nn.Sequential(ReferenceNormalize(*IMAGENET), network)(x)
    original = nn.Sequential(ReferenceNormalize(*IMAGENET), nn.DataParallel(network)).eval()
    path = tmp_path / "resnet50.pth.tar"
    _save_reference(path, "resnet50", original)
    assert "1.module.conv1.weight" in torch.load(path, weights_only=True)["state_dict"]
    loaded = load_checkpoint(path)
    assert {t.device.type for t in (*loaded.parameters(), *loaded.buffers())} == {"cpu"}  # where asked: the CPU
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_checkpoints_load_on_the_device_asked_for(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    _save_reference(path, "cifar_resnet20", nn.Sequential(ReferenceNormalize(*CIFAR10), cifar_resnet20()))
    assert next(load_checkpoint(path).parameters()).device.type == "cpu"
    gpu = load_checkpoint(path, map_location="cuda")
    assert {t.device.type for t in (*gpu.parameters(), *gpu.buffers())} == {"cuda"}
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), load_checkpoint(path)(x), rtol=1e-4, atol=1e-4)


def test_old_checkpoints_without_batch_norm_counters_load(tmp_path):
    original = nn.Sequential(ReferenceNormalize(*CIFAR10), _perturb(cifar_resnet20()))
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"epoch": 1, "arch": "cifar_resnet20", "state_dict": state}, path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(x), original(x))


def test_errors_list_what_was_expected(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"epoch": 1, "arch": "wide_resnet", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="arch 'wide_resnet' is none of the reference code's \\(cifar100_resnet110"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="unknown architecture 'wide_resnet'; valid: .*cifar_resnet110"):
        load_checkpoint(path, dataset="cifar10")
    state = cifar_resnet20().state_dict()  # the network without the Sequential's "1." prefix
    torch.save({"epoch": 1, "arch": "cifar_resnet20", "state_dict": state}, path)
    with pytest.raises(ValueError, match=r"missing keys \[1\.bn1\.bias.*expected keys look like \[1\."):
        load_checkpoint(path)
    torch.save({"epoch": 1, "arch": "cifar_resnet20", "state_dict": {"1." + k: v for k, v in state.items()}}, path)
    with pytest.raises(ValueError, match="size mismatch"):
        load_checkpoint(path, dataset="cifar100")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"epoch": 1, "arch": "lenet", "state_dict": {}, "model": nn.Linear(1, 1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(path)


def test_catrs_certify_takes_a_reference_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pth.tar"
    _save_reference(path, "cifar_resnet20", nn.Sequential(ReferenceNormalize(*CIFAR10), cifar_resnet20()))
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [3, 1, 4, 1]}, handle)
    out = tmp_path / "certify.tsv"
    assert main(["certify", "cifar10", str(path), "0.25", str(out), "--N0", "10", "--N", "20", "--batch", "20",
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--quiet"]) == 0
    results = read_certify_results(out)
    assert list(results.idx) == [0, 1, 2, 3] and list(results.label) == [3, 1, 4, 1]
