"""ART integration: :class:`~catrs_adapters.art.estimator.PyTorchCATRS` and
:class:`~catrs_adapters.art.trainer.CATRSTrainer`.

This package's ``__init__`` imports nothing, because :mod:`catrs_adapters.art.hook` is
imported at interpreter start-up and must stay cheap.
"""
