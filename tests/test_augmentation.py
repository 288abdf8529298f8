"""Training augmentation on the device: torchvision's crops and flips, seeded per (seed, epoch, batch)."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.augmentation import RandomCropFlip, one_view
from catrs_plugin.train.data import training_data, training_soft_labels
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.train.soft_labels import smoothed_soft_labels


def crops_of(image, padding):
    """Every (top, left, flipped) -> torchvision's RandomCrop(padding) + hflip result for ``image``."""
    h, w = image.shape[-2:]
    padded = TF.pad(image, [padding])
    return {(top, left, flip): (TF.hflip if flip else (lambda t: t))(TF.crop(padded, top, left, h, w))
            for top in range(2 * padding + 1) for left in range(2 * padding + 1) for flip in (False, True)}


def test_each_output_is_one_of_torchvisions_crops_and_all_of_them_occur():
    torch.manual_seed(0)
    x = torch.rand(400, 3, 6, 6)
    out = RandomCropFlip(padding=2)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = []
    for image, result in zip(x, out):
        matches = [key for key, crop in crops_of(image, 2).items() if torch.equal(crop, result)]
        assert len(matches) == 1, "every output must be exactly one padded crop (flipped or not)"
        seen.append(matches[0])
    offsets = {(top, left) for top, left, _ in seen}
    assert offsets == {(t, l) for t in range(5) for l in range(5)}  # all 25 offsets, as RandomCrop draws them
    flips = np.mean([flip for _, _, flip in seen])
    assert 0.4 < flips < 0.6  # RandomHorizontalFlip(p=0.5); 400 draws put a fair coin here with p > 0.9999


def test_same_generator_same_images_other_seed_others():
    x = torch.rand(16, 3, 8, 8)
    augment = RandomCropFlip(padding=4)
    a = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4)))
    assert torch.equal(RandomCropFlip(padding=0, flip=False)(x, torch.Generator()), x)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="padding must be an integer >= 0"):
        RandomCropFlip(padding=-1)
    with pytest.raises(ValueError, match=r"batch of images \(B, C, H, W\)"):
        RandomCropFlip()(torch.rand(3, 8, 8), torch.Generator())


def test_registered_datasets_bring_the_references_augmentation():
    registry = get_registry()
    for name in ("cifar10", "cifar100"):
        augment = registry.dataset(name).augment
        assert isinstance(augment, RandomCropFlip) and (augment.padding, augment.flip) == (4, True)
    for name in ("digits", "mnist", "cifar10c"):  # the reference trains MNIST on ToTensor() only
        assert registry.dataset(name).augment is None
    assert registry.dataset("imagenet").train_dataset is not None
    data = training_data(registry.dataset("digits"))
    assert isinstance(data, TensorData) and data.augment is None


def test_batches_are_seeded_by_seed_epoch_and_batch(digits):
    data = TensorData(digits[0][:100], digits[1][:100], augment=RandomCropFlip(padding=1))
    first = [x for x, _, _ in data.batches(2, 32, 7, torch.device("cpu"))]
    again = [x for x, _, _ in data.batches(2, 32, 7, torch.device("cpu"))]
    other = [x for x, _, _ in data.batches(3, 32, 7, torch.device("cpu"))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    plain = [x for x, _, _ in TensorData(digits[0][:100], digits[1][:100]).batches(2, 32, 7, torch.device("cpu"))]
    assert not all(torch.equal(a, b) for a, b in zip(first, plain))  # the images really are augmented


def test_resumed_run_sees_the_images_an_uninterrupted_run_sees(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128]
    gaussian = get_registry().method("gaussian")

    def run(epochs, checkpoint):
        torch.manual_seed(0)
        model = get_registry().create_model("digits_cnn", "digits")
        config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, lr_step_size=2, seed=5,
                             checkpoint=str(checkpoint), progress=False)
        train(model, gaussian, {}, 0.25, TensorData(x, y, augment=RandomCropFlip(padding=1)), config)
        return model

    whole = run(3, tmp_path / "whole.pt")
    run(1, tmp_path / "resumed.pt")
    resumed = run(3, tmp_path / "resumed.pt")
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_soft_labels_are_computed_on_one_augmented_view_as_in_the_reference(digits):
    registry = get_registry()
    spec = dataclasses.replace(registry.dataset("digits"), augment=RandomCropFlip(padding=1))
    torch.manual_seed(0)
    teacher = registry.create_model("digits_cnn", "digits")
    x = spec.load("train", n_examples=40)[0]
    views = one_view(spec.augment, x, seed=3)
    assert views.shape == x.shape and not np.array_equal(views, x)
    assert np.array_equal(views, one_view(spec.augment, x, seed=3))
    soft = training_soft_labels(teacher, spec, 0.25, 50, seed=3, n_examples=40)
    assert np.array_equal(soft, smoothed_soft_labels(teacher, views, 10, 0.25, 50, seed=3))
    assert not np.array_equal(soft, smoothed_soft_labels(teacher, x, 10, 0.25, 50, seed=3))


@pytest.mark.cuda
def test_on_the_gpu_batches_are_crops_and_repeat_for_the_same_seed(digits):
    x = torch.rand(64, 3, 6, 6, device="cuda")
    out = RandomCropFlip(padding=2)(x, torch.Generator(device="cuda").manual_seed(1))
    assert out.device.type == "cuda"
    for image, result in zip(x.cpu(), out.cpu()):
        assert sum(torch.equal(crop, result) for crop in crops_of(image, 2).values()) == 1
    data = TensorData(digits[0][:100], digits[1][:100], augment=RandomCropFlip(padding=1)).to(torch.device("cuda"))
    first = [b for b, _, _ in data.batches(1, 32, 7, torch.device("cuda"))]
    again = [b for b, _, _ in data.batches(1, 32, 7, torch.device("cuda"))]
    assert all(a.is_cuda and torch.equal(a, b) for a, b in zip(first, again))
