"""Drop-in replacements for ``robustbench.data``'s loaders (RobustBench 1.1.1), on local files.

Same names, parameters (names, order, defaults) and return types as RobustBench's:
:func:`load_cifar10`, :func:`load_cifar100`, :func:`load_cifar10c`, :func:`load_cifar100c`,
:func:`load_imagenet` and :func:`load_imagenetc`; torch tensors, float32 images in [0, 1] after
``transforms_test``, labels as RobustBench returns them (int64; for CIFAR-10-C and CIFAR-100-C
the dtype of ``labels.npy``, uint8 in the published files). The images and their order are
RobustBench's (tests check them against ``robustbench.data`` where it is installed:
``tox -e robustbench``). Differences, all deliberate:

* nothing is downloaded: a missing file raises :class:`FileNotFoundError` naming the file
  and where the data set is published (RobustBench downloads CIFAR, CIFAR-10-C and
  CIFAR-100-C, and its CIFAR loaders re-download any file whose md5 sum differs);
* :func:`load_imagenet` and :func:`load_imagenetc` accept ``n_examples=None`` for all 5,000
  images (RobustBench fails on it) and need RobustBench installed only for its list of the
  5,000 images; bad arguments raise :class:`ValueError` where RobustBench asserts;
* with the default ``transforms_test``, CIFAR images are scaled in one vectorised step that
  gives the same numbers as ``ToTensor`` on each image.

The numpy readers behind the registered datasets
(:func:`~catrs_adapters.data.cifar.read_cifar10`,
:func:`~catrs_adapters.data.imagenet.read_imagenet`,
:func:`~catrs_adapters.data.cifar10c.read_corruption`) read the same files.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from catrs_adapters.data._files import data_root, require_dir
from catrs_adapters.data.cifar import cifar10_split, cifar100_split
from catrs_adapters.data.cifar10c import CORRUPTIONS, check_severity, corruption_arrays, severity_block
from catrs_adapters.data.imagenet import PREPROCESS, decode_image, imagenet_samples, robustbench_samples
from catrs_plugin.utils.validation import check_positive_int

#: RobustBench's default CIFAR transform (``PREPROCESSINGS[None]``).
TO_TENSOR = transforms.ToTensor()

#: RobustBench's default ImageNet transform (``PREPROCESSINGS['Res256Crop224']``).
RES256_CROP224 = PREPROCESS

#: Images RobustBench evaluates ImageNet on.
IMAGENET_EXAMPLES = 5000

DATA_DIR = "./data"

IMAGENETC_URL = "https://zenodo.org/records/2235448 (blur.tar, digital.tar, noise.tar, weather.tar, extra.tar)"


def load_cifar10(
    n_examples: int | None = None, data_dir: str | os.PathLike = DATA_DIR, transforms_test: Callable = TO_TENSOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_cifar10``: the first ``n_examples`` CIFAR-10 test images (all when ``None``).

    Returns
    -------
    x : torch.Tensor
        ``transforms_test`` of each image (PIL, RGB), stacked: ``(n, 3, 32, 32)`` float32 by default.
    y : torch.Tensor
        ``(n,)`` int64.
    """
    return _cifar(*cifar10_split("test", data_dir, n_examples), transforms_test)


def load_cifar100(
    n_examples: int | None = None, data_dir: str | os.PathLike = DATA_DIR, transforms_test: Callable = TO_TENSOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_cifar100``: CIFAR-100 test images with their fine labels (as :func:`load_cifar10`)."""
    return _cifar(*cifar100_split("test", data_dir, n_examples), transforms_test)


def load_cifar10c(
    n_examples: int,
    severity: int = 5,
    data_dir: str | os.PathLike = DATA_DIR,
    shuffle: bool = False,
    corruptions: Sequence[str] = CORRUPTIONS,
    _: Callable = TO_TENSOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_cifar10c``: CIFAR-10-C images of ``corruptions`` at ``severity``.

    Takes the first ``ceil(n_examples / len(corruptions))`` rows of each corruption at
    ``severity``, concatenates them in the order of ``corruptions``, shuffles them with
    ``numpy.random.permutation`` (numpy's global state, as RobustBench) when ``shuffle``, and
    keeps ``n_examples``. The sixth parameter is accepted and ignored, as RobustBench ignores it
    (and names it ``_``).

    Returns
    -------
    x : torch.Tensor
        ``(n, 3, 32, 32)`` float32 in [0, 1].
    y : torch.Tensor
        ``(n,)``, in the dtype of ``labels.npy`` (uint8 in the published files), as RobustBench.
    """
    return _corrupted_cifar("CIFAR-10-C", n_examples, severity, data_dir, shuffle, corruptions)


def load_cifar100c(
    n_examples: int,
    severity: int = 5,
    data_dir: str | os.PathLike = DATA_DIR,
    shuffle: bool = False,
    corruptions: Sequence[str] = CORRUPTIONS,
    _: Callable = TO_TENSOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_cifar100c``: CIFAR-100-C (``data_dir/CIFAR-100-C/``), as :func:`load_cifar10c`."""
    return _corrupted_cifar("CIFAR-100-C", n_examples, severity, data_dir, shuffle, corruptions)


def _corrupted_cifar(dataset: str, n_examples: int, severity: int, data_dir: str | os.PathLike, shuffle: bool,
                     corruptions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustBench's selection from a corrupted CIFAR test set (``load_corruptions_cifar``)."""
    check_positive_int(n_examples, "n_examples")
    per_corruption = -(-int(n_examples) // len(corruptions))
    images, labels = [], []
    for corruption in corruptions:
        stored_labels, stored_images, per_severity = corruption_arrays(corruption, data_dir, dataset)
        rows = severity_block(severity, per_severity)[:per_corruption]
        images.append(np.asarray(stored_images[rows]))
        labels.append(stored_labels[: len(rows)])  # the labels repeat per severity; RobustBench takes the first
    x, y = np.concatenate(images), np.concatenate(labels)
    if shuffle:
        order = np.random.permutation(np.arange(len(x)))
        x, y = x[order], y[order]
    x = np.transpose(x, (0, 3, 1, 2)).astype(np.float32) / 255
    return torch.from_numpy(x[:n_examples]), torch.from_numpy(y[:n_examples])


def load_imagenet(
    n_examples: int | None = IMAGENET_EXAMPLES,
    data_dir: str | os.PathLike = DATA_DIR,
    transforms_test: Callable = RES256_CROP224,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_imagenet``: the first ``n_examples`` of RobustBench's 5,000 validation images.

    Reads ``data_dir/val/<wnid>/<file>`` in the order of RobustBench's list (which needs
    robustbench installed); labels are the sorted class folders' indices, as there.

    Returns
    -------
    x : torch.Tensor
        ``transforms_test`` of each image (PIL, RGB), stacked: ``(n, 3, 224, 224)`` float32 by default.
    y : torch.Tensor
        ``(n,)`` int64.
    """
    count = _imagenet_count(n_examples)
    return _decoded(imagenet_samples(data_dir, "robustbench")[:count], transforms_test)


def load_imagenetc(
    n_examples: int | None = IMAGENET_EXAMPLES,
    severity: int = 5,
    data_dir: str | os.PathLike = DATA_DIR,
    shuffle: bool = False,
    corruptions: Sequence[str] = CORRUPTIONS,
    prepr: Callable = TO_TENSOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_imagenetc``: RobustBench's 5,000 images of one ImageNet-C corruption and severity.

    Reads ``data_dir/ImageNet-C/<corruption>/<severity>/<wnid>/<file>`` (the extracted
    ImageNet-C tars: 224 x 224 JPEGs of the validation images) for the images of RobustBench's
    list, in its order; labels are the indices of that folder's sorted class folders. With
    ``shuffle`` the first ``n_examples`` of a random order are taken, drawn from torch's global
    generator as RobustBench's ``DataLoader(shuffle=True)`` draws it. ``prepr`` is applied to
    each image (PIL, RGB); ``corruptions`` must name exactly one corruption, as in RobustBench.

    Returns
    -------
    x : torch.Tensor
        ``prepr`` of each image, stacked: ``(n, 3, 224, 224)`` float32 by default.
    y : torch.Tensor
        ``(n,)`` int64.
    """
    count = _imagenet_count(n_examples)
    if isinstance(corruptions, str) or len(corruptions) != 1:
        raise ValueError(f"corruptions must name exactly one corruption (RobustBench loads ImageNet-C one "
                         f"corruption at a time), got {corruptions!r}")
    root = data_root(data_dir) / "ImageNet-C" / corruptions[0] / str(check_severity(severity))
    samples = robustbench_samples(require_dir(root, "ImageNet-C", IMAGENETC_URL), "ImageNet-C", IMAGENETC_URL)
    if shuffle:  # the first batch of RobustBench's DataLoader(batch_size=n_examples, shuffle=True): same draws
        chosen = next(iter(torch.utils.data.DataLoader(range(len(samples)), batch_size=count, shuffle=True)))
        samples = [samples[int(i)] for i in chosen]
    return _decoded(samples[:count], prepr, dataset="ImageNet-C", published=IMAGENETC_URL)


def _imagenet_count(n_examples: int | None) -> int:
    """RobustBench's ImageNet sample count: 1 .. 5,000 (``None``: 5,000)."""
    count = IMAGENET_EXAMPLES if n_examples is None else n_examples
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= IMAGENET_EXAMPLES:
        raise ValueError(
            f"n_examples must be an integer in 1..{IMAGENET_EXAMPLES} (RobustBench evaluates ImageNet on at most "
            f"{IMAGENET_EXAMPLES} images) or None, got {n_examples!r}"
        )
    return int(count)


def _decoded(samples: list, transform: Callable, **where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images through ``transform``, stacked, and their labels as int64 (as torch's default collate).

    ``where`` (``dataset``, ``published``) names the data set in the error for a missing file.
    """
    x = torch.stack([torch.as_tensor(decode_image(path, transform, **where)) for path, _ in samples])
    return x, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _cifar(images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Any]):
    """uint8 ``(n, 3, 32, 32)`` images through ``transform`` (as torchvision's CIFAR datasets apply it) and labels."""
    if transform is TO_TENSOR:
        x = torch.from_numpy(images.astype(np.float32) / 255)
    else:
        x = torch.stack([torch.as_tensor(transform(Image.fromarray(image.transpose(1, 2, 0)))) for image in images])
    return x, torch.from_numpy(labels)
