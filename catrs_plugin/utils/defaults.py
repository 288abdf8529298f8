"""Defaults and choices that the ``catrs`` command shows in its help, in a module that imports nothing, so that
building the command's parser (``catrs --help``) does not import torch. The modules they belong to import them
from here, and re-export them."""

#: Data-loading worker processes for file-based training data (the reference's ``--workers`` default);
#: :mod:`catrs_plugin.train.data`.
DEFAULT_WORKERS = 4

#: Runs per CUDA device when none is given (not measured on a GPU yet; see the comparison guide);
#: :mod:`catrs_plugin.compare.runners`.
DEFAULT_RUNS_PER_GPU = 2

#: Mixed-precision settings: bf16 autocast, or fp16 autocast with a gradient scaler (the keys of
#: :data:`catrs_plugin.train.loop.AMP_DTYPES`).
AMP_NAMES = ("bf16", "fp16")

#: Share of ``alpha`` that sequential CERTIFY gives its confidence sequence when none is given (why 0.2:
#: :data:`catrs_plugin.certify.sequential.SEQUENCE_SHARE`).
SEQUENCE_SHARE = 0.2
