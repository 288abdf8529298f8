"""Training augmentation applied to whole batches on their device.

The reference training scripts augment CIFAR-10 and CIFAR-100 training images with
``transforms.RandomCrop(32, padding=4)`` and ``transforms.RandomHorizontalFlip()`` in the data
loader, one image at a time on the CPU. :class:`RandomCropFlip` draws the same distribution
for a whole batch at once where the batch already is (on the GPU, in-memory training data is
never sent back to the CPU to be cropped): for every image an offset in ``0 .. 2 * padding``
along each axis of the zero-padded image, and a flip with probability 1/2, all from the
generator it is given. :class:`catrs_plugin.train.loop.TensorData` seeds that generator from
``(seed, epoch, batch)`` (the stream domain :data:`~catrs_plugin.utils.streams.AUGMENTATION`), so a resumed run sees exactly the images an uninterrupted run sees.

An augmentation is any callable ``augment(x, generator) -> x`` on a batch ``(B, C, H, W)``
in [0, 1]; a registered dataset names its own in :attr:`catrs_plugin.plugins.specs.DatasetSpec.augment`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from catrs_plugin.utils import streams
from catrs_plugin.utils.validation import check_positive_int

#: ``augment(x, generator) -> x``: a batch transform drawing its randomness from ``generator``.
Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

class RandomCropFlip:
    """``RandomCrop(size, padding)`` followed by ``RandomHorizontalFlip()``, batched on the device.

    Parameters
    ----------
    padding : int
        Zeros added on every side before a crop of the original size is taken (torchvision's
        ``RandomCrop(size, padding=padding)`` with its default constant fill 0).
    flip : bool
        Also mirror each image left-right with probability 1/2.
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        self.padding = check_positive_int(padding, "padding", minimum=0)
        self.flip = bool(flip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Crop (and flip) every image of ``x`` ``(B, C, H, W)``; returns a new tensor."""
        if x.ndim != 4:
            raise ValueError(f"RandomCropFlip needs a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        pad, device = self.padding, x.device
        top = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=device)
        left = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=device)
        rows = top[:, None] + torch.arange(h, device=device)
        cols = left[:, None] + torch.arange(w, device=device)
        if self.flip:
            mirror = torch.rand(b, generator=generator, device=device) < 0.5
            cols = torch.where(mirror[:, None], cols.flip(1), cols)
        padded = F.pad(x, (pad, pad, pad, pad))
        batch = torch.arange(b, device=device)[:, None, None, None]
        channel = torch.arange(c, device=device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"


def one_view(
    augment: Augmentation,
    x: np.ndarray | torch.Tensor,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> np.ndarray:
    """One augmented copy of every example, e.g. the training images CAT-RS's soft labels are computed on.

    The reference computes the teacher's smoothed predictions by iterating its augmented
    training set once, so each soft label belongs to one random crop and flip of its image.
    Batch ``k`` is drawn from a generator seeded by ``(seed, k)`` in the stream domain
    :data:`~catrs_plugin.utils.streams.SOFT_LABEL_VIEWS`.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``x``.
    """
    device = torch.device(device)
    check_positive_int(batch_size, "batch_size")
    tensor = torch.as_tensor(np.asarray(x, dtype=np.float32))
    views = []
    for number, start in enumerate(range(0, len(tensor), batch_size)):
        generator = streams.generator(streams.SOFT_LABEL_VIEWS, seed, number, device=device)
        views.append(augment(tensor[start : start + batch_size].to(device), generator).cpu())
    return torch.cat(views).numpy()


__all__ = ["Augmentation", "RandomCropFlip", "one_view"]
