"""The training split of a registered dataset as training reads it, and the images soft labels are computed on.

Two kinds of registered datasets (:class:`~catrs_plugin.plugins.specs.DatasetSpec`):

* **in memory** (digits, MNIST, CIFAR): ``load("train")`` returns arrays; training shuffles
  them and applies the dataset's ``augment`` to each batch on the device
  (:class:`~catrs_plugin.train.loop.TensorData`);
* **from files** (ImageNet): ``train_dataset()`` returns a map-style dataset that decodes and
  augments one image at a time; training reads it through a ``DataLoader`` with worker
  processes (:class:`~catrs_plugin.train.loop.LoaderData`), as the reference code does. Every
  example is drawn with torch's random number generator seeded from ``(seed, epoch, index)``
  in the domain :data:`~catrs_plugin.utils.streams.LOADER_AUGMENTATION` (:class:`SeededDataset`), so the crops do not depend on the number of workers and a resumed
  run sees the same images as an uninterrupted one.

CAT-RS's soft labels are the smoothed predictions of a Gaussian teacher on the training
split. The reference (``smooth_prediction.py --split train``) iterates its *augmented*
training set once, so every soft label belongs to one random crop and flip of its image:
:func:`training_soft_labels` does the same (one view per image from a fixed seed; the
images as loaded when the dataset has no augmentation), and :func:`training_soft_labels_to_file`
caches them with their provenance record.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from catrs_plugin.certify.smoothing import Smooth, model_device
from catrs_plugin.plugins.specs import DatasetSpec
from catrs_plugin.train.augmentation import one_view
from catrs_plugin.train.data_schedule import epoch_order
from catrs_plugin.train.loop import LoaderData, TensorData, rank_share
from catrs_plugin.train.soft_labels import smoothed_soft_labels, soft_labels_to_file
from catrs_plugin.utils import locking, provenance, streams
from catrs_plugin.utils.atomic import save_npy_atomic
from catrs_plugin.utils.defaults import DEFAULT_WORKERS
from catrs_plugin.utils.validation import check_output_file, check_positive_int, check_soft_labels


class SeededDataset(Dataset):
    """A map-style dataset whose per-example random transform is seeded by ``(seed, epoch, index)``.

    Each item is drawn inside ``torch.random.fork_rng`` with torch's generator seeded from
    ``(seed, epoch, index)`` in a stream domain (:mod:`catrs_plugin.utils.streams`;
    :data:`~catrs_plugin.utils.streams.LOADER_AUGMENTATION` in training): the same in the main
    process and in any worker, and the caller's random state is left as it was.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Yields ``(x, y)`` and draws its random transform from torch's global generator (as
        torchvision's transforms do).
    soft_labels : numpy.ndarray, optional
        Shape ``(len(dataset), C)``; items are then ``(x, y, soft label row)``.
    """

    def __init__(self, dataset: Dataset, soft_labels: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self.soft = None if soft_labels is None else torch.as_tensor(np.asarray(soft_labels, dtype=np.float32))
        self.seed, self.epoch, self.domain = 0, 0, streams.LOADER_AUGMENTATION

    def set_epoch(self, seed: int, epoch: int, domain: str = streams.LOADER_AUGMENTATION) -> None:
        """Draw the next iteration's transforms for ``(seed, epoch)`` in ``domain`` (called by ``LoaderData``)."""
        self.seed, self.epoch, self.domain = int(seed), int(epoch), domain

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(streams.derive_seed(self.domain, self.seed, self.epoch, int(index)))
            x, y = self.dataset[index]
        return (x, y) if self.soft is None else (x, y, self.soft[index])


class EpochBatchSampler(Sampler):
    """Loader batches in the order :class:`~catrs_plugin.train.loop.TensorData` uses, one rank's share each.

    Epoch ``e`` visits the examples in the permutation seeded by ``(seed, e)`` (or the order a
    method's data schedule gives), cut into batches of ``batch_size``; with ``world`` processes
    each rank gets its equal contiguous share of every batch, so under ``torchrun`` every image is
    decoded by one rank only.
    """

    def __init__(self, count: int, batch_size: int) -> None:
        self.count = count
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed, self.epoch, self.rank, self.world = 0, 0, 0, 1
        self.order: torch.Tensor | None = None

    def set_epoch(self, seed: int, epoch: int, rank: int = 0, world: int = 1, order: torch.Tensor | None = None) -> None:
        """Draw the next iteration's batches for ``(seed, epoch)``, rank ``rank`` of ``world``; ``order``:
        the examples a data schedule chose for the epoch (default: every example once)."""
        self.seed, self.epoch, self.rank, self.world = int(seed), int(epoch), int(rank), int(world)
        self.order = order

    def __iter__(self):
        order = epoch_order(self.count, self.seed, self.epoch) if self.order is None else self.order
        for start in range(0, len(order), self.batch_size):
            take = order[start : start + self.batch_size]
            take = take[rank_share(len(take), self.rank, self.world)]
            if len(take):  # a last batch smaller than the number of ranks gives every rank nothing
                yield take.tolist()

    def __len__(self) -> int:
        return -(-(self.count if self.order is None else len(self.order)) // self.batch_size)


def loader_of(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, pin_memory: bool) -> DataLoader:
    """A ``DataLoader`` over ``dataset``: shuffled by an :class:`EpochBatchSampler`, or in order.

    It has its own generator, so iterating it leaves the global random state alone.
    """
    check_positive_int(batch_size, "batch_size")
    check_positive_int(workers, "workers", minimum=0)
    batching = {"batch_sampler": EpochBatchSampler(len(dataset), batch_size)} if shuffle else {"batch_size": batch_size}
    return DataLoader(dataset, num_workers=workers, pin_memory=pin_memory, generator=torch.Generator(), **batching)


def training_data(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    soft_labels: np.ndarray | None = None,
    soft_labels_name: str = "soft_labels",
    n_examples: int | None = None,
    batch_size: int = 256,
    workers: int = DEFAULT_WORKERS,
    pin_memory: bool | None = None,
) -> TensorData | LoaderData:
    """The training split of ``spec`` with its augmentation, ready for :func:`catrs_plugin.train.loop.train`.

    Parameters
    ----------
    spec : DatasetSpec
        The registered dataset.
    data_dir : str or os.PathLike, optional
        Where its files live.
    soft_labels : numpy.ndarray, optional
        ``(examples, classes)``, one row per training example in loading order.
    soft_labels_name : str
        What the soft labels are to the caller, for error messages (e.g. a command-line option).
    n_examples : int, optional
        Train on the first ``n_examples`` only.
    batch_size : int
        Loader batch size of file-based data (in-memory data takes it from ``TrainConfig``).
    workers : int
        Worker processes decoding file-based data.
    pin_memory : bool, optional
        Pinned host memory for file-based data (default: when CUDA is available).
    """
    if spec.train_dataset is not None:
        dataset = spec.train_dataset(data_dir=data_dir, n_examples=n_examples)
        if soft_labels is not None:
            soft_labels = check_soft_labels(soft_labels, len(dataset), spec.num_classes, soft_labels_name)
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        return LoaderData(loader_of(SeededDataset(dataset, soft_labels), batch_size, shuffle=True, workers=workers,
                                    pin_memory=pin))
    x, y = spec.load("train", data_dir=data_dir, n_examples=n_examples)
    if soft_labels is not None:
        soft_labels = check_soft_labels(soft_labels, len(x), spec.num_classes, soft_labels_name)
    return TensorData(x, y, soft_labels, augment=spec.augment)


def training_soft_labels(
    teacher: nn.Module,
    spec: DatasetSpec,
    sigma: float,
    n: int,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    *,
    n_examples: int | None = None,
    batch_size: int | str = 1000,
    workers: int = DEFAULT_WORKERS,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The teacher's smoothed predictions on one augmented view of every training example.

    Parameters
    ----------
    teacher : torch.nn.Module
        The Gaussian teacher (``sigma = 0.25`` in the paper), on its device.
    spec : DatasetSpec
        The registered dataset.
    sigma, n : float, int
        Noise level and noise samples per example (10,000 in the paper).
    seed : int
        Seed of the views and of the noise.
    data_dir, n_examples
        As for :func:`training_data`.
    batch_size : int or "auto"
        Noisy samples per forward pass (results do not depend on it).
    workers : int
        Worker processes decoding file-based data.
    autocast_dtype : torch.dtype, optional
        Run the teacher under autocast in this dtype (default: fp32).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        ``(examples, classes)`` float32, rows summing to 1, in loading order.
    """
    device = model_device(teacher)
    if spec.train_dataset is None:
        return smoothed_soft_labels(teacher, training_views(spec, seed, device, data_dir, n_examples),
                                    spec.num_classes, sigma, n, batch_size=batch_size, seed=seed,
                                    autocast_dtype=autocast_dtype, progress=progress)
    dataset = SeededDataset(spec.train_dataset(data_dir=data_dir, n_examples=n_examples))
    dataset.set_epoch(seed, 0, streams.SOFT_LABEL_VIEWS)
    smooth = Smooth(teacher, spec.num_classes, sigma, batch_size=batch_size, seed=seed, autocast_dtype=autocast_dtype)
    parts, offset = [], 0
    loader = loader_of(dataset, 256, shuffle=False, workers=workers, pin_memory=device.type == "cuda")
    for x, _ in tqdm(loader, desc="soft labels", unit="batch", disable=not progress):
        parts.append(smooth.class_frequencies(x, n, indices=np.arange(offset, offset + len(x))))
        offset += len(x)
    return np.concatenate(parts)


def training_views(
    spec: DatasetSpec, seed: int, device: torch.device | str = "cpu", data_dir: str | os.PathLike | None = None,
    n_examples: int | None = None,
) -> np.ndarray:
    """The in-memory training images soft labels are computed on: one augmented view each (seeded by ``seed``).

    The images as loaded when ``spec`` has no augmentation.
    """
    x, _ = spec.load("train", data_dir=data_dir, n_examples=n_examples)
    return x if spec.augment is None else one_view(spec.augment, x, seed, device)


def training_soft_labels_to_file(
    teacher: nn.Module,
    spec: DatasetSpec,
    sigma: float,
    n: int,
    outfile: str | os.PathLike,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    *,
    n_examples: int | None = None,
    batch_size: int | str = 1000,
    workers: int = DEFAULT_WORKERS,
    autocast_dtype: torch.dtype | None = None,
    resume: bool = True,
    progress: bool = False,
) -> int:
    """:func:`training_soft_labels` written to ``outfile`` (``.npy``) with its provenance record.

    In-memory datasets go through :func:`~catrs_plugin.train.soft_labels.soft_labels_to_file`, which
    resumes after the last finished row; file-based ones (ImageNet) are computed in one go. A
    finished ``outfile`` is reused only when its record matches (the teacher's weights, the
    images or, for file-based data, the dataset, folder and count, ``sigma``, ``n``, ``seed``
    and the precision); otherwise :class:`~catrs_plugin.utils.provenance.ProvenanceError` names
    what differs. ``resume=False`` computes them afresh.

    Returns
    -------
    int
        Rows computed by this call (0 when ``outfile`` already held these soft labels).
    """
    augmented = spec.augment is not None or spec.train_dataset is not None
    settings = {"dataset": spec.name, "split": "train", "views": "augmented" if augmented else "as loaded"}
    if spec.train_dataset is None:
        x = training_views(spec, seed, model_device(teacher), data_dir, n_examples)
        return soft_labels_to_file(teacher, x, spec.num_classes, sigma, outfile, n=n, batch_size=batch_size,
                                   seed=seed, autocast_dtype=autocast_dtype, settings=settings, resume=resume,
                                   progress=progress)
    outfile = Path(outfile)
    root = Path(data_dir if data_dir is not None else "data").resolve()
    record = {"command": "soft-labels", "model": provenance.weights_digest(teacher), "data_dir": str(root),
              "n_examples": n_examples, "classes": spec.num_classes, "sigma": float(sigma), "N": int(n),
              "seed": int(seed), "precision": provenance.precision_name(autocast_dtype), **settings}
    with locking.exclusive(check_output_file(outfile, "soft labels file"), "soft labels"):
        if resume and provenance.reuse(outfile, record, what="soft labels"):
            return 0
        soft = training_soft_labels(teacher, spec, sigma, n, seed, data_dir, n_examples=n_examples,
                                    batch_size=batch_size, workers=workers, autocast_dtype=autocast_dtype,
                                    progress=progress)
        provenance.save(outfile, record, lambda path: save_npy_atomic(path, soft))
    return len(soft)


__all__ = ["DEFAULT_WORKERS", "EpochBatchSampler", "SeededDataset", "loader_of", "training_data",
           "training_soft_labels", "training_soft_labels_to_file", "training_views"]
