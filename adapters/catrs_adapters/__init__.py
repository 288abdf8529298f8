"""Glue between the catrs-plugin core and the ecosystems around it (imported as ``catrs_adapters``).

* :mod:`catrs_adapters.art`: the ART estimator :class:`~catrs_adapters.art.estimator.PyTorchCATRS`,
  the trainer :class:`~catrs_adapters.art.trainer.CATRSTrainer` and the attacks;
* :mod:`catrs_adapters.hook`: the start-up hook that exposes both under ``art.`` and registers
  our backbones with timm (:mod:`catrs_adapters.timm_models`);
* :mod:`catrs_adapters.datasets`: RobustBench-style data loaders, registered as datasets;
* :mod:`catrs_adapters.builtins`: the entry-point module registering all of the above.

Importing this package installs the hook (cheaply, nothing else is imported), so that it also
works where Python did not read our ``.pth`` file at start-up, e.g. after
``pip install --target DIR`` with ``PYTHONPATH=DIR``.
"""

from catrs_adapters.hook import install as _install_hook

_install_hook()
