"""Drop-in replacements for ``robustbench.data``'s loaders (RobustBench 1.1.1), on local files.

Same names, arguments, defaults and return types as RobustBench's: torch tensors, float32
images in [0, 1] after ``transforms_test``, labels as RobustBench returns them (int64; for
CIFAR-10-C the dtype of ``labels.npy``, uint8 in the published files). The images and their
order are RobustBench's (a test checks them against ``robustbench.data`` where it is
installed: ``tox -e robustbench``). Differences, all deliberate:

* nothing is downloaded: a missing file raises :class:`FileNotFoundError` naming the file
  and where the data set is published (RobustBench downloads CIFAR and CIFAR-10-C, and its
  CIFAR loaders re-download any file whose md5 sum differs);
* :func:`load_imagenet` accepts ``n_examples=None`` for all 5,000 images (RobustBench fails on
  it) and needs RobustBench installed only for its list of the 5,000 images;
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

from catrs_adapters.data.cifar import cifar10_split, cifar100_split
from catrs_adapters.data.cifar10c import CORRUPTIONS, corruption_arrays, severity_block
from catrs_adapters.data.imagenet import PREPROCESS, decode_image, imagenet_samples
from catrs_plugin.utils.validation import check_positive_int

#: RobustBench's default CIFAR transform (``PREPROCESSINGS[None]``).
TO_TENSOR = transforms.ToTensor()

#: RobustBench's default ImageNet transform (``PREPROCESSINGS['Res256Crop224']``).
RES256_CROP224 = PREPROCESS

#: Images RobustBench evaluates ImageNet on.
IMAGENET_EXAMPLES = 5000

DATA_DIR = "./data"


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
    prepr: Callable = TO_TENSOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``robustbench.data.load_cifar10c``: CIFAR-10-C images of ``corruptions`` at ``severity``.

    Takes the first ``ceil(n_examples / len(corruptions))`` rows of each corruption at
    ``severity``, concatenates them in the order of ``corruptions``, shuffles them with
    ``numpy.random.permutation`` (numpy's global state, as RobustBench) when ``shuffle``, and
    keeps ``n_examples``. ``prepr`` is accepted and ignored, as RobustBench ignores its sixth
    argument.

    Returns
    -------
    x : torch.Tensor
        ``(n, 3, 32, 32)`` float32 in [0, 1].
    y : torch.Tensor
        ``(n,)``, in the dtype of ``labels.npy`` (uint8 in the published files), as RobustBench.
    """
    check_positive_int(n_examples, "n_examples")
    per_corruption = -(-int(n_examples) // len(corruptions))
    images, labels = [], []
    for corruption in corruptions:
        stored_labels, stored_images, per_severity = corruption_arrays(corruption, data_dir)
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
    count = IMAGENET_EXAMPLES if n_examples is None else n_examples
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= IMAGENET_EXAMPLES:
        raise ValueError(
            f"n_examples must be an integer in 1..{IMAGENET_EXAMPLES} (RobustBench evaluates ImageNet on at most "
            f"{IMAGENET_EXAMPLES} images) or None, got {n_examples!r}"
        )
    samples = imagenet_samples(data_dir, "robustbench")[:count]
    x = torch.stack([torch.as_tensor(decode_image(path, transforms_test)) for path, _ in samples])
    return x, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _cifar(images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Any]):
    """uint8 ``(n, 3, 32, 32)`` images through ``transform`` (as torchvision's CIFAR datasets apply it) and labels."""
    if transform is TO_TENSOR:
        x = torch.from_numpy(images.astype(np.float32) / 255)
    else:
        x = torch.stack([torch.as_tensor(transform(Image.fromarray(image.transpose(1, 2, 0)))) for image in images])
    return x, torch.from_numpy(labels)
