"""Seeds of every random stream, one domain per purpose, so that no two purposes ever share a stream.

Every random draw of a run (training noise, data order, augmentation, soft labels, certification,
attacks ...) comes from a generator seeded by :func:`derive_seed` from a *domain*, the name of
its purpose, and integer keys (the run's seed, an epoch, an example index ...). Two draws share a
stream only when their domain and keys are equal: certification can never draw the noise a model
was trained on, whatever the epoch and example indices, even though ``catrs compare`` and the
command line use one ``--seed`` for both. (The initial weights come from torch's global
generator seeded with the run's seed, which no stream is.) The domains of the project:

=================================  =====================================================
domain                             keys
=================================  =====================================================
:data:`EPOCH_ORDER`                seed, epoch
:data:`TRAINING_NOISE`             seed, epoch (, rank under ``torchrun``)
:data:`AUGMENTATION`               seed, epoch, loader batch (in-memory data)
:data:`LOADER_AUGMENTATION`        seed, epoch, example index (file-based data)
:data:`SOFT_LABEL_VIEWS`           seed, batch (in memory) or seed, 0, index (from files)
:data:`DATA_SCHEDULE`              seed, epoch: what a method's data schedule hook draws
:data:`SCHEDULE_VIEWS`             seed, epoch, batch: augmentation of the examples a hook reads
:data:`CERTIFY_SELECTION` ...      seed, example index: the four phases of
                                   :class:`~catrs_plugin.certify.smoothing.Smooth`
                                   (:data:`CERTIFY_SELECTION`, :data:`CERTIFY_ESTIMATION`,
                                   :data:`PREDICT_NOISE`, :data:`SOFT_LABEL_NOISE`)
:data:`COLLAPSE_CHECK`             seed
:data:`ATTACK`                     seed, eps in millionths
:data:`FIT_CALL`, :data:`TEACHER`  seed, call number (ART's repeated ``fit`` calls)
=================================  =====================================================

Plugins may use domains of their own: any string is a domain. The derivation feeds NumPy's
``SeedSequence`` with :data:`SCHEME`, a 64-bit hash of the domain, the number of keys and
every key as two 32-bit words, so different (domain, keys) give unrelated seeds and no key
list is a prefix or re-cut of another. :data:`SCHEME` is part of every provenance record
(:mod:`catrs_plugin.utils.provenance`): files and checkpoints made under another scheme drew other
noise and are refused instead of being continued with this one's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Version of the seed derivation, recorded in every provenance record. Version 1 (no domains,
#: ``SeedSequence([seed, index, phase])``) let training noise of epoch ``e`` equal the
#: estimation noise of test example ``e``; it was never recorded, so its outputs have no version.
SCHEME = 2

EPOCH_ORDER = "epoch order"
TRAINING_NOISE = "training noise"
AUGMENTATION = "augmentation"
LOADER_AUGMENTATION = "loader augmentation"
SOFT_LABEL_VIEWS = "soft-label views"
DATA_SCHEDULE = "data schedule"
SCHEDULE_VIEWS = "schedule views"
CERTIFY_SELECTION = "certify selection"
CERTIFY_ESTIMATION = "certify estimation"
PREDICT_NOISE = "predict"
SOFT_LABEL_NOISE = "soft labels"
COLLAPSE_CHECK = "collapse check"
ATTACK = "attack"
FIT_CALL = "fit call"
TEACHER = "teacher"

#: Every domain the project itself draws from.
DOMAINS = (EPOCH_ORDER, TRAINING_NOISE, AUGMENTATION, LOADER_AUGMENTATION, SOFT_LABEL_VIEWS, DATA_SCHEDULE,
           SCHEDULE_VIEWS, CERTIFY_SELECTION, CERTIFY_ESTIMATION, PREDICT_NOISE, SOFT_LABEL_NOISE, COLLAPSE_CHECK, ATTACK, FIT_CALL, TEACHER)

_KEY_LIMIT = 2**64


def _domain_words(domain: str) -> list[int]:
    digest = hashlib.sha256(domain.encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in (0, 4)]


def derive_seed(domain: str, *keys: int) -> int:
    """The 63-bit generator seed of stream ``(domain, *keys)``.

    Parameters
    ----------
    domain : str
        The purpose of the stream (see the module docstring).
    *keys : int
        Integers in ``[0, 2**64)``: the run's seed first, then what tells the draws of that
        purpose apart (epoch, example index ...).

    Raises
    ------
    ValueError
        If ``domain`` is not a non-empty string or a key is not such an integer.
    """
    if not isinstance(domain, str) or not domain:
        raise ValueError(f"domain must be a non-empty string naming the purpose of the stream, got {domain!r}")
    words = [SCHEME, *_domain_words(domain), len(keys)]
    for key in keys:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or not 0 <= key < _KEY_LIMIT:
            raise ValueError(f"keys of stream {domain!r} must be integers in [0, 2**64), got {key!r}")
        words += [int(key) & 0xFFFFFFFF, int(key) >> 32]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)


def generator(domain: str, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` ``(domain, *keys)``."""
    import torch  # here, so that reading result files (which checks SCHEME) imports no torch

    return torch.Generator(device=device).manual_seed(derive_seed(domain, *keys))


__all__ = ["DOMAINS", "SCHEME", "derive_seed", "generator"]
