"""RobustBench interoperability, in one place.

``import robustbench`` (1.1.1) fails out of the box twice: it imports ``pkg_resources``, which
setuptools removed in version 81 (the ``robustbench`` extra therefore requires
``setuptools<81``), and it imports a module ``autoattack`` while its PyPI dependency
``pyautoattack`` installs that code as ``pyautoattack``. :func:`import_robustbench_data`
aliases the module before importing, which makes ``robustbench.data`` usable.

Our loaders read the same files as RobustBench's without it (it is an optional dependency,
and its CIFAR loaders go through torchvision with ``download=True``); RobustBench itself
provides the fixed list of 5,000 ImageNet validation images it evaluates on.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

_INSTALL_HINT = "install it with: pip install 'catrs-plugin[robustbench]'"


def import_robustbench_data() -> ModuleType:
    """``robustbench.data``, importable despite the ``autoattack`` module name.

    Raises
    ------
    ImportError
        If robustbench (or pyautoattack) is not installed, with the command that installs it.
    """
    if "autoattack" not in sys.modules:
        try:
            sys.modules["autoattack"] = importlib.import_module("pyautoattack")
        except ImportError:
            pass  # an installation that provides the module ``autoattack`` itself also works
    try:
        return importlib.import_module("robustbench.data")
    except ImportError as error:
        raise ImportError(f"robustbench could not be imported ({error}); {_INSTALL_HINT}", name="robustbench") from None


def imagenet_5000_list() -> list[str]:
    """RobustBench's 5,000 ImageNet validation images, as ``<wnid>/<file name>`` in its order."""
    data = import_robustbench_data()
    path = Path(data.__file__).parent / "helper_files" / "imagenet_test_image_ids.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
