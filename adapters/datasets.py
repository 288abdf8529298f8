"""Dataset loaders registered with the ``catrs`` registry.

Every loader returns numpy arrays (ART's convention): ``x`` float32 in [0, 1], channels first,
and ``y`` int64 class indices. No loader downloads anything.
"""

from __future__ import annotations

import numpy as np

from catrs_plugin.specs import DatasetSpec
from catrs_plugin.validation import check_choice

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
