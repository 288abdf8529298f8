"""ImageNet training on a tiny ImageFolder of generated JPEGs: the train/ split, worker processes,
seeded per-image augmentation, soft labels on one view, and the CAT-RS ImageNet recipe end to end."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from catrs_adapters.data.imagenet import TRAIN_TRANSFORM, load_imagenet_train
from catrs_plugin.cli import main
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.plugins.specs import ModelSpec
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.data import SeededDataset, training_data, training_soft_labels
from catrs_plugin.train.loop import LoaderData
from catrs_plugin.train.soft_labels import smoothed_soft_labels
from catrs_plugin.utils.streams import SOFT_LABEL_VIEWS

WNIDS = ["n01440764", "n01443537", "n01484850"]
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """``train/`` (4 JPEGs per class) and ``val/`` (2 per class) of three colour-coded classes, odd sizes."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for wnid, colour in zip(WNIDS, COLOURS):
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 96, size=2)
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
    return root


def tiny_net(num_classes=1000, in_chans=3):
    """Colour means over 28x28 cells and a linear layer: trains in seconds on 224x224 crops."""
    return nn.Sequential(nn.AvgPool2d(28), nn.Flatten(), nn.Linear(in_chans * 8 * 8, num_classes))


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(get_registry().models, "tiny_rgb", ModelSpec("tiny_rgb", tiny_net, "test model"))
    return "tiny_rgb"


def test_train_split_reads_class_folders_with_the_reference_transform(imagenet_dir):
    dataset = load_imagenet_train(imagenet_dir)
    assert len(dataset) == 12 and [label for _, label in dataset.samples] == [0] * 4 + [1] * 4 + [2] * 4
    assert dataset.transform is TRAIN_TRANSFORM
    seeded = SeededDataset(dataset)
    seeded.set_epoch(1, 0)
    x, y = seeded[5]
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == 1
    assert torch.equal(seeded[5][0], x)  # the same (seed, epoch, index): the same crop
    seeded.set_epoch(1, 1)
    assert not torch.equal(seeded[5][0], x)
    assert len(load_imagenet_train(imagenet_dir, n_examples=5)) == 5
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar"):
        load_imagenet_train(imagenet_dir / "missing")


def test_loader_batches_do_not_depend_on_the_workers_and_repeat_when_resumed(imagenet_dir):
    spec = get_registry().dataset("imagenet")

    def epoch(workers, number):
        data = training_data(spec, imagenet_dir, batch_size=5, workers=workers, pin_memory=False)
        assert isinstance(data, LoaderData)
        return list(data.batches(number, 5, 3, torch.device("cpu")))

    serial, parallel, again, later = epoch(0, 1), epoch(2, 1), epoch(2, 1), epoch(2, 2)
    assert [len(x) for x, _, _ in serial] == [5, 5, 2]
    for (a, ya, _), (b, yb, _), (c, yc, _) in zip(serial, parallel, again):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(ya, yb) and torch.equal(ya, yc)
    assert not torch.equal(serial[0][0], later[0][0])


def test_under_torchrun_each_rank_reads_only_its_share_of_every_batch(imagenet_dir):
    data = training_data(get_registry().dataset("imagenet"), imagenet_dir, batch_size=6, workers=0, pin_memory=False)
    cpu = torch.device("cpu")
    whole = list(data.batches(1, 6, 3, cpu))
    ranks = [list(data.batches(1, 6, 3, cpu, rank=rank, world=2)) for rank in (0, 1)]
    assert [len(x) for x, _, _ in whole] == [6, 6] and [len(x) for x, _, _ in ranks[0]] == [3, 3]
    for (x, y, _), (x0, y0, _), (x1, y1, _) in zip(whole, *ranks):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_soft_labels_come_from_one_random_view_of_each_training_image(imagenet_dir, tiny_arch):
    registry = get_registry()
    spec = registry.dataset("imagenet")
    torch.manual_seed(0)
    teacher = registry.create_model(tiny_arch, "imagenet")
    soft = training_soft_labels(teacher, spec, 0.25, 16, seed=4, data_dir=imagenet_dir, workers=0)
    views = SeededDataset(load_imagenet_train(imagenet_dir))
    views.set_epoch(4, 0, SOFT_LABEL_VIEWS)
    x = torch.stack([views[i][0] for i in range(len(views))]).numpy()
    assert soft.shape == (12, 1000)
    assert np.array_equal(soft, smoothed_soft_labels(teacher, x, 1000, 0.25, 16, seed=4))


@pytest.mark.slow
def test_catrs_imagenet_recipe_trains_and_certifies(imagenet_dir, tiny_arch, tmp_path, capsys):
    out = tmp_path / "eval-imagenet"
    args = ["compare", "--dataset", "imagenet", "--methods", "catrs", "--sigma", "1.0", "--preset", "imagenet",
            "--data-dir", str(imagenet_dir), "--arch", tiny_arch, "--epochs", "6", "--batch", "4",
            "--soft-samples", "16", "--N0", "10", "--N", "50", "--alpha", "0.01", "--skip", "1", "--workers", "2",
            "--output", str(out), "--device", "cpu", "--quiet", "--certify-collapsed"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| catrs( \(collapsed\))? \| 6 \|", printed), printed  # a 6-epoch model may be at chance
    assert np.load(out / "teacher" / "soft_labels.npy").shape == (12, 1000)
    checkpoint = read_checkpoint(out / "noise_1.0" / "checkpoints" / "catrs.pt")
    assert checkpoint["hyperparameters"] == {"num_noise_vec": 2, "epsilon": 1.0, "num_steps": 1, "lbd": 2.0,
                                             "warmup": 80, "confidence_mask": True}
    summary = json.loads((out / "noise_1.0" / "summary.json").read_text())["methods"][0]
    # The recipe's own schedule (step 30, lr_drop 85) with the epochs and batch given on the command line.
    assert summary["training"] == {"epochs": 6, "batch_size": 4, "lr": 0.1, "lr_step_size": 30, "lr_drop": 85}
    assert summary["preset"] == "imagenet" and summary["n"] == 6 and summary["certified"]
    assert read_checkpoint(out / "teacher" / "gaussian_noise_0.25.pt")["epoch"] == 6
