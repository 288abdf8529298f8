"""The per-example noise streams every procedure draws from: their phases and their block size.

Each phase of an example (CERTIFY's selection and estimation, PREDICT, soft labels) has its own
generator, seeded from the seed, the example's index and the phase
(:meth:`catrs_plugin.certify.smoothing.Smooth.noise_stream`), which draws standard normal noise
in blocks of :data:`NOISE_BLOCK` samples in stream order. The exact procedures
(:mod:`catrs_plugin.certify.smoothing`) and the sequential one
(:mod:`catrs_plugin.certify.sequential`) read the same streams, so an example's samples are the
same whichever procedure, batch size or batch companions it gets.
"""

#: Phase identifiers: each phase of an example draws from its own noise stream.
SELECTION, ESTIMATION, PREDICTION, SOFT_LABELS = 0, 1, 2, 3

#: Samples drawn per generator call. Fixing it makes the stream independent of the batch size.
NOISE_BLOCK = 100
