"""ImageNet images from class folders, preprocessed like the reference code.

Layout under ``data_dir`` (the training set as distributed, one folder per class, and the
validation set sorted the same way, e.g. with ``valprep.sh`` as the reference code and
RobustBench expect)::

    data_dir/train/n01440764/n01440764_10026.JPEG
    data_dir/val/n01440764/ILSVRC2012_val_00000293.JPEG
    data_dir/val/n01443537/...

Classes are the sorted folder names (torchvision's ``ImageFolder`` order, so the labels are
the usual 0..999); images come in ``ImageFolder`` order (by class, then file name), or in the
order of RobustBench's fixed list of 5,000 images. Each validation image is resized to 256 on
its short side, centre-cropped to 224 and scaled to [0, 1] (the reference's ``test`` transform
and RobustBench's ``Res256Crop224``). Each training image is augmented as in the reference's
``train`` transform: ``RandomResizedCrop(224)`` and ``RandomHorizontalFlip()``, drawn anew every
time the image is read (:class:`ImageFolderDataset`, :func:`load_imagenet_train`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from catrs_adapters.data._files import data_root, require_dir, require_file, take
from catrs_plugin.utils.reading import parsing
from catrs_plugin.utils.validation import check_choice

IMAGENET_URL = (
    "https://image-net.org/download-images.php (ILSVRC2012_img_val.tar, 50,000 images; for training, "
    "ILSVRC2012_img_train.tar, 1,281,167 images)"
)

#: Image sets: every validation image, or RobustBench's 5,000.
IMAGE_SETS = ("all", "robustbench")

PREPROCESS = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])

#: The reference's ImageNet training transform (random draws from torch's generator).
TRAIN_TRANSFORM = transforms.Compose(
    [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
)


def class_folder_samples(root: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` of every image under ``root/<class>/``, in ``ImageFolder`` order."""
    _, class_to_idx = find_classes(str(root))
    return [(Path(path), label) for path, label in make_dataset(str(root), class_to_idx, IMG_EXTENSIONS)]


def imagenet_samples(data_dir: str | os.PathLike | None = None, image_set: str = "all") -> list[tuple[Path, int]]:
    """``(path, label)`` of the chosen validation images, in loading order."""
    check_choice(image_set, IMAGE_SETS, "image_set")
    root = require_dir(data_root(data_dir) / "val", "ImageNet", IMAGENET_URL)
    return class_folder_samples(root) if image_set == "all" else robustbench_samples(root)


def robustbench_samples(root: Path, dataset: str = "ImageNet", published: str = IMAGENET_URL) -> list[tuple[Path, int]]:
    """``(path, label)`` of RobustBench's 5,000 images under ``root/<wnid>/``, in its order.

    Labels are the indices of ``root``'s sorted class folders, as RobustBench's ``CustomImageFolder``
    gives them. ``root`` is ``val/`` for ImageNet, ``ImageNet-C/<corruption>/<severity>/`` for
    ImageNet-C; ``dataset`` and ``published`` go into the error for a missing class folder.
    """
    _, class_to_idx = find_classes(str(root))
    from catrs_adapters.data.robustbench import imagenet_5000_list

    samples = []
    for name in imagenet_5000_list():
        wnid = name.split("/")[0]
        if wnid not in class_to_idx:
            raise FileNotFoundError(
                f"{dataset}: class folder {str(root / wnid)!r} of RobustBench's image {name!r} does not exist; "
                f"the data set is published at {published}"
            )
        samples.append((root / name, class_to_idx[wnid]))
    return samples


class ImageFolderArray:
    """Images decoded on access: an array-like of shape ``(n, 3, 224, 224)`` over image files.

    Indexing with an integer, a slice or an array of integers decodes just those images into a
    float32 numpy array, so certifying every 100th ImageNet validation image never holds the
    other 49,500 in memory. ``numpy.asarray`` decodes everything.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.shape = (len(self.paths), 3, 224, 224)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._decode(self.paths[index])
        rows = np.arange(len(self.paths))[index]
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        for position, row in enumerate(rows):
            out[position] = self._decode(self.paths[row])
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    @staticmethod
    def _decode(path: Path) -> np.ndarray:
        return decode_image(path).numpy()


def decode_image(path: Path, transform: Callable[[Image.Image], Any] = PREPROCESS, dataset: str = "ImageNet",
                 published: str = IMAGENET_URL) -> Any:
    """One image file, converted to RGB (as ``ImageFolder`` and RobustBench load it) and passed to ``transform``.

    Raises
    ------
    ValueError
        Naming the file, if it is not an image PIL can decode, or is larger than PIL's pixel
        limit (``PIL.Image.MAX_IMAGE_PIXELS``, its guard against decompression bombs).
    """
    path = require_file(path, dataset, published)
    with parsing(path, f"{dataset} image", "an image within PIL's pixel limit"), Image.open(path) as image:
        return transform(image.convert("RGB"))


def read_imagenet(
    n_examples: int | None = None,
    data_dir: str | os.PathLike | None = None,
    image_set: str = "all",
    shuffle: bool = False,
    seed: int = 0,
    lazy: bool = False,
) -> tuple[np.ndarray | ImageFolderArray, np.ndarray]:
    """ImageNet validation images as numpy arrays, the reader of the registered ``imagenet`` dataset.

    For RobustBench's ``load_imagenet`` (torch tensors, 5,000 images by default,
    ``transforms_test``) see :func:`~catrs_adapters.data.robustbench_loaders.load_imagenet`.

    Float32 images take 0.6 MB each: decoding the 50,000 images of ``image_set="all"`` at once
    needs 30 GB of memory, so the registered ``imagenet`` dataset loads lazily.

    Parameters
    ----------
    n_examples : int, optional
        Keep the first ``n_examples`` (after shuffling); all when ``None``.
    data_dir : str or os.PathLike, optional
        Folder holding ``val/`` (default ``./data``).
    image_set : {"all", "robustbench"}
        Every validation image, or RobustBench's 5,000 (needs robustbench installed).
    shuffle : bool
        Shuffle with ``numpy.random.default_rng(seed)`` before taking ``n_examples``.
    lazy : bool
        Return an :class:`ImageFolderArray` that decodes images when indexed, instead of
        decoding them all now.

    Returns
    -------
    x : numpy.ndarray or ImageFolderArray
        ``(n, 3, 224, 224)`` float32 in [0, 1].
    y : numpy.ndarray
        ``(n,)`` int64.
    """
    samples = imagenet_samples(data_dir, image_set)
    if shuffle:
        samples = [samples[i] for i in np.random.default_rng(seed).permutation(len(samples))]
    (samples,) = take(n_examples, samples)
    images = ImageFolderArray([require_file(path, "ImageNet", IMAGENET_URL) for path, _ in samples])
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return (images if lazy else images[:]), labels


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images decoded and transformed one at a time, for a ``DataLoader`` with worker processes.

    Parameters
    ----------
    samples : list of (path, label)
        The images, in order.
    transform : callable
        PIL image to ``(3, H, W)`` float tensor in [0, 1]; random transforms draw from torch's
        generator, which :class:`catrs_plugin.train.data.SeededDataset` seeds per example.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform=TRAIN_TRANSFORM) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path, self.transform), label


def load_imagenet_train(
    data_dir: str | os.PathLike | None = None, n_examples: int | None = None
) -> ImageFolderDataset:
    """The ImageNet training images under ``data_dir/train/<wnid>/`` with the reference's training transform.

    The registered ``imagenet`` dataset's ``train_dataset``: training reads it through a
    ``DataLoader`` with worker processes (the 1.28 million images do not fit in memory).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder holding ``train/`` (default ``./data``).
    n_examples : int, optional
        Keep the first ``n_examples`` in ``ImageFolder`` order (all when ``None``).
    """
    samples = class_folder_samples(require_dir(data_root(data_dir) / "train", "ImageNet", IMAGENET_URL))
    if not samples:
        raise FileNotFoundError(
            f"ImageNet: no images under {str(data_root(data_dir) / 'train')!r}/<class>/; the data set is "
            f"published at {IMAGENET_URL}"
        )
    (samples,) = take(n_examples, samples)
    return ImageFolderDataset(samples)
