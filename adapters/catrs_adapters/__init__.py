"""Glue between the catrs-plugin core and the ecosystems around it (imported as ``catrs_adapters``).

* :mod:`catrs_adapters.art`: the ART estimator :class:`PyTorchCATRS`, the trainer
  :class:`CATRSTrainer`, and the import hook that exposes both under ``art.``;
* :mod:`catrs_adapters.datasets`: RobustBench-style data loaders, registered as datasets;
* :mod:`catrs_adapters.builtins`: the entry-point module registering all of the above.
"""
