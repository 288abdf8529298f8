"""ART integration: :class:`~catrs_adapters.art.estimator.PyTorchCATRS`,
:class:`~catrs_adapters.art.trainer.CATRSTrainer` and the attacks of
:mod:`catrs_adapters.art.empirical`. This ``__init__`` imports nothing: the ART classes load on
first use.
"""
