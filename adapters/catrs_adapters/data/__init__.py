"""Readers of the data sets' published on-disk formats (no downloads).

Two families read the same files:

* RobustBench drop-ins, with ``robustbench.data``'s names, arguments, defaults and torch
  tensors: :func:`load_cifar10`, :func:`load_cifar100`, :func:`load_cifar10c`, :func:`load_cifar100c`,
  :func:`load_imagenet`, :func:`load_imagenetc` (see :mod:`catrs_adapters.data.robustbench_loaders`);
* numpy readers (ART's convention), behind the datasets :mod:`catrs_adapters.datasets`
  registers: :func:`read_cifar10`, :func:`read_cifar100`, :func:`read_corruption`,
  :func:`read_imagenet`, :func:`load_mnist` (RobustBench has no MNIST loader), and the
  single-file readers :func:`read_cifar_batch` and :func:`read_idx`;
* :func:`load_imagenet_train`, the ImageNet training split as a torch dataset that augments
  each image as the reference's training transform does.
"""

from catrs_adapters.data.cifar import read_cifar10, read_cifar100, read_cifar_batch
from catrs_adapters.data.cifar10c import CORRUPTIONS, SEVERITIES, read_corruption
from catrs_adapters.data.imagenet import load_imagenet_train, read_imagenet
from catrs_adapters.data.mnist import load_mnist, read_idx
from catrs_adapters.data.robustbench_loaders import (
    load_cifar10,
    load_cifar10c,
    load_cifar100,
    load_cifar100c,
    load_imagenet,
    load_imagenetc,
)

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "load_cifar10",
    "load_cifar100",
    "load_cifar100c",
    "load_cifar10c",
    "load_imagenet",
    "load_imagenetc",
    "load_imagenet_train",
    "load_mnist",
    "read_cifar10",
    "read_cifar100",
    "read_cifar_batch",
    "read_corruption",
    "read_idx",
    "read_imagenet",
]
