"""Readers of the data sets' published on-disk formats (no downloads, numpy out).

Signatures follow ``robustbench.data`` (``n_examples``, ``data_dir``, ``severity``,
``corruptions``, ``shuffle``); :mod:`catrs_adapters.datasets` registers them as datasets.
"""

from catrs_adapters.data.cifar import load_cifar10, load_cifar100, read_cifar_batch
from catrs_adapters.data.cifar10c import CORRUPTIONS, SEVERITIES, load_cifar10c, read_corruption
from catrs_adapters.data.imagenet import load_imagenet, load_imagenet_train
from catrs_adapters.data.mnist import load_mnist, read_idx

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "load_cifar10",
    "load_cifar100",
    "load_cifar10c",
    "load_imagenet",
    "load_imagenet_train",
    "load_mnist",
    "read_cifar_batch",
    "read_corruption",
    "read_idx",
]
