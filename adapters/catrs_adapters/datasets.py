"""Datasets registered with the ``catrs`` registry: the embedded digits and the file-based
CIFAR-10, CIFAR-100, CIFAR-10-C, ImageNet and MNIST (readers in :mod:`catrs_adapters.data`).

Every loader returns numpy arrays (ART's convention): ``x`` float32 in [0, 1], channels first,
and ``y`` int64 class indices. No loader downloads anything; ``data_dir`` defaults to
``./data`` as in RobustBench.

Training augmentation, as in the reference code's ``datasets.py``: CIFAR-10 and CIFAR-100
training images are randomly cropped (32 with padding 4) and flipped, on the device in batches
(:class:`catrs_plugin.train.augmentation.RandomCropFlip`); ImageNet training images are read from
``train/`` class folders with ``RandomResizedCrop(224)`` and a flip per image in data-loading
workers (``train_dataset``). MNIST is not augmented (the reference applies only
``ToTensor``), and neither are the 8x8 digits (a flip changes what a digit is, and the smallest
crop padding of one pixel is an eighth of the image).
"""

from __future__ import annotations

import os

import numpy as np

from catrs_adapters.data import CORRUPTIONS, load_mnist, read_cifar10, read_cifar100, read_corruption, read_imagenet
from catrs_adapters.data._files import take
from catrs_adapters.data.cifar import CIFAR10_URL, CIFAR100_URL
from catrs_adapters.data.cifar10c import CIFAR10C_URL
from catrs_adapters.data.imagenet import IMAGENET_URL, load_imagenet_train
from catrs_adapters.data.mnist import MNIST_URL
from catrs_adapters.normalization import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from catrs_plugin.plugins.specs import DatasetSpec
from catrs_plugin.train.augmentation import RandomCropFlip
from catrs_plugin.utils.validation import check_choice

#: ImageNet splits: the reference code's ``test`` (all validation images) and RobustBench's 5,000.
IMAGENET_SPLITS = {"test": "all", "test5000": "robustbench"}

#: Held-out share of the digits data and the seed of its fixed split.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits(
    split: str = "test", data_dir: str | None = None, n_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (1,797 real 8x8 grey images, 10 classes), offline.

    A fixed permutation (seed 0) puts 20% of the images (360) in ``test`` and the rest (1,437)
    in ``train``. ``data_dir`` is accepted for a uniform signature and ignored: the data ships
    with scikit-learn.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 1, 8, 8)`` float32 in [0, 1].
    y : numpy.ndarray
        ``(n,)`` int64.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    check_choice(split, ("train", "test"), "split")
    data = sklearn_digits()
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(data.target))
    cut = int(round(len(order) * (1 - DIGITS_TEST_FRACTION)))
    chosen = order[:cut] if split == "train" else order[cut:]
    x = (data.images[chosen] / 16.0).astype(np.float32)[:, None]
    y = data.target[chosen].astype(np.int64)
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    return x, y


DIGITS = DatasetSpec(
    name="digits",
    num_classes=10,
    input_shape=(1, 8, 8),
    mean=(0.3053,),
    std=(0.3760,),
    load=load_digits,
    default_arch="digits_cnn",
    description="scikit-learn's handwritten digits (UCI ML hand-written digits), 8x8 grey, ships with scikit-learn",
)


def _cifar10(split: str, data_dir: str | os.PathLike | None = None, n_examples: int | None = None):
    return read_cifar10(n_examples, data_dir, split)


def _cifar100(split: str, data_dir: str | os.PathLike | None = None, n_examples: int | None = None):
    return read_cifar100(n_examples, data_dir, split)


def _cifar10c(split: str, data_dir: str | os.PathLike | None = None, n_examples: int | None = None):
    x, y, _ = read_corruption(split, data_dir)
    return take(n_examples, x, y)


def _imagenet(split: str, data_dir: str | os.PathLike | None = None, n_examples: int | None = None):
    check_choice(split, tuple(IMAGENET_SPLITS), "split")
    return read_imagenet(n_examples, data_dir, IMAGENET_SPLITS[split], lazy=True)


def _mnist(split: str, data_dir: str | os.PathLike | None = None, n_examples: int | None = None):
    return load_mnist(n_examples, data_dir, split)


#: CIFAR's training augmentation in the reference code: ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``.
CIFAR_AUGMENT = RandomCropFlip(padding=4)

CIFAR10 = DatasetSpec(
    name="cifar10", num_classes=10, input_shape=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, load=_cifar10,
    default_arch="cifar_resnet110", description=f"CIFAR-10, DATA_DIR/cifar-10-batches-py, from {CIFAR10_URL}",
    augment=CIFAR_AUGMENT,
)
CIFAR100 = DatasetSpec(
    name="cifar100", num_classes=100, input_shape=(3, 32, 32), mean=CIFAR100_MEAN, std=CIFAR100_STD,
    load=_cifar100, default_arch="cifar_resnet110",
    description=f"CIFAR-100 (fine labels), DATA_DIR/cifar-100-python, from {CIFAR100_URL}",
    augment=CIFAR_AUGMENT,
)
CIFAR10C = DatasetSpec(
    name="cifar10c", num_classes=10, input_shape=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, load=_cifar10c,
    default_arch="cifar_resnet110", splits=CORRUPTIONS,
    description=f"CIFAR-10-C, one split per corruption (all 5 severities, 50,000 rows), DATA_DIR/CIFAR-10-C, "
                f"from {CIFAR10C_URL}",
)
IMAGENET = DatasetSpec(
    name="imagenet", num_classes=1000, input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    load=_imagenet, default_arch="resnet50", splits=tuple(IMAGENET_SPLITS),
    description=f"ImageNet (training: DATA_DIR/train/<wnid>/; test: all 50,000 validation images, test5000: "
                f"RobustBench's 5,000, DATA_DIR/val/<wnid>/), from {IMAGENET_URL}",
    train_dataset=load_imagenet_train,
)
MNIST = DatasetSpec(
    name="mnist", num_classes=10, input_shape=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD, load=_mnist,
    default_arch="lenet",
    description=f"MNIST IDX files, DATA_DIR/MNIST/raw, from {MNIST_URL} (no normalisation, as in the reference)",
)
