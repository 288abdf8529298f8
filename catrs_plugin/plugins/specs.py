"""Descriptions of registered models, datasets and attacks (methods: :class:`catrs_plugin.methods.Method`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes
    ----------
    name : str
        Architecture name, as stored in checkpoints' ``arch`` field.
    factory : callable
        ``factory(num_classes=..., in_chans=...) -> nn.Module`` building the network *without*
        normalisation; :meth:`catrs_plugin.plugins.registry.Registry.create_model` prepends the
        dataset's :class:`~catrs_plugin.backbones.normalize.NormalizeLayer`.
    description : str
        One line for listings.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes
    ----------
    name : str
        Dataset name used on the command line.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one example, channels first (e.g. ``(3, 32, 32)``).
    mean, std : tuple of float
        Per-channel normalisation applied inside the model.
    load : callable
        ``load(split, data_dir=None, n_examples=None) -> (x, y)``: ``x`` float32 in [0, 1] of
        shape ``(n, *input_shape)``, ``y`` int64 of shape ``(n,)``.
    default_arch : str
        Architecture used when none is given.
    splits : tuple of str
        Valid values of ``split``.
    description : str
        One line for listings, including where the data is published.
    augment : callable or None
        The data set's training augmentation for in-memory training data,
        ``augment(x, generator) -> x`` on a batch ``(B, *input_shape)`` on its device, drawing
        every random choice from ``generator`` (e.g.
        :class:`catrs_plugin.train.augmentation.RandomCropFlip` for CIFAR); ``None``: train on the
        images as loaded. Test images are never augmented.
    train_dataset : callable or None
        For a training split too large for memory (ImageNet): ``train_dataset(data_dir=None,
        n_examples=None) -> torch.utils.data.Dataset`` of ``(x, y)`` pairs, ``x`` a float tensor of
        shape ``input_shape`` in [0, 1], transformed per image with the data set's own random
        training augmentation drawn from torch's random number generator. Training then reads it
        with a ``DataLoader`` and worker processes (see :mod:`catrs_plugin.train.data`) instead
        of calling ``load("train")``; ``augment`` does not apply.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[..., tuple[np.ndarray, np.ndarray]]
    default_arch: str
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    train_dataset: Callable[..., Dataset] | None = None


@dataclass(frozen=True)
class AttackSpec:
    """A registered evasion attack on smoothed classifiers, for empirical accuracy next to certificates.

    Attributes
    ----------
    name : str
        Attack name (``catrs compare`` uses ``art_l2_pgd``).
    to_file : callable
        ``to_file(model, num_classes, input_shape, sigma, x, y, indices, eps, outfile, *, steps,
        attack_samples, n, alpha, batch_size, seed, progress) -> int``: attack ``x[indices]`` at
        L2 radius ``eps``, run PREDICT on the results and append Cohen-format PREDICT rows to
        ``outfile`` (resumably); returns the rows written.
    description : str
        One line for listings.
    """

    name: str
    to_file: Callable[..., int]
    description: str = ""
