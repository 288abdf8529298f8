"""The per-example noise streams every procedure draws from: their phases and their block size.

Each phase of an example (CERTIFY's selection and estimation, PREDICT, soft labels) has its own
generator, seeded from the phase's stream domain (:data:`PHASE_DOMAINS`, apart from every
training stream: :mod:`catrs_plugin.utils.streams`), the seed and the example's index
(:func:`noise_generator`; :meth:`catrs_plugin.certify.smoothing.Smooth.noise_stream`), which
draws standard normal noise in blocks of :data:`NOISE_BLOCK` samples in stream order. The exact procedures
(:mod:`catrs_plugin.certify.smoothing`) and the sequential one
(:mod:`catrs_plugin.certify.sequential`) read the same streams, so an example's samples are the
same whichever procedure, batch size or batch companions it gets.
"""

from __future__ import annotations

import torch

from catrs_plugin.utils import streams

#: Phase identifiers: each phase of an example draws from its own noise stream.
SELECTION, ESTIMATION, PREDICTION, SOFT_LABELS = 0, 1, 2, 3

#: Samples drawn per generator call. Fixing it makes the stream independent of the batch size.
NOISE_BLOCK = 100

#: The stream domain (:mod:`catrs_plugin.utils.streams`) of each phase.
PHASE_DOMAINS = {
    SELECTION: streams.CERTIFY_SELECTION,
    ESTIMATION: streams.CERTIFY_ESTIMATION,
    PREDICTION: streams.PREDICT_NOISE,
    SOFT_LABELS: streams.SOFT_LABEL_NOISE,
}


def noise_generator(seed: int, index: int, phase: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of the noise of example ``index`` in ``phase`` (:data:`PHASE_DOMAINS`), on ``device``.

    Seeded by ``derive_seed(PHASE_DOMAINS[phase], seed, index)``
    (:func:`catrs_plugin.utils.streams.derive_seed`). Every noise sample
    :class:`~catrs_plugin.certify.smoothing.Smooth` draws comes from one of these, in blocks of
    :data:`NOISE_BLOCK`; anything that must reproduce or extend its draws calls this function.

    Raises
    ------
    ValueError
        For a phase without a domain in :data:`PHASE_DOMAINS`.
    """
    if phase not in PHASE_DOMAINS:
        raise ValueError(f"phase must be one of {sorted(PHASE_DOMAINS)} (see PHASE_DOMAINS), got {phase!r}")
    return streams.generator(PHASE_DOMAINS[phase], int(seed), int(index), device=device)
