"""Sphinx configuration for catrs-plugin."""

import logging
import re
from pathlib import Path

from catrs_plugin import __version__

project = "catrs-plugin"
author = "catrs-plugin developers"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# ART's own docstrings (inherited members) are not numpy-style; document only our members.
autodoc_inherit_docstrings = False
nitpicky = False

# Links to the projects whose classes we subclass or take (base classes, numpy arrays, torch
# modules). Each inventory is read from docs/_inventories/<name>.inv when that file exists (for
# offline builds with links; e.g. `curl -o docs/_inventories/art.inv URL/objects.inv`), else
# from the web. timm has no Sphinx inventory (its documentation is not built with Sphinx), so
# the pages link to it by URL.
INVENTORIES = Path(__file__).parent / "_inventories"
_PROJECTS = {
    "python": "https://docs.python.org/3",
    "numpy": "https://numpy.org/doc/stable",
    "torch": "https://docs.pytorch.org/docs/stable",
    "art": "https://adversarial-robustness-toolbox.readthedocs.io/en/latest",
}
intersphinx_mapping = {
    name: (url, (str(INVENTORIES / f"{name}.inv"), None) if (INVENTORIES / f"{name}.inv").is_file() else None)
    for name, url in _PROJECTS.items()
}
intersphinx_timeout = 10


class _OfflineInventories(logging.Filter):
    """Without a network, an unreachable inventory is reported as information, not as a warning.

    The references into that project then render as plain text instead of links; ``-W`` builds
    still pass offline. Any other inventory problem (a wrong address, a broken file) stays a
    warning.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno == logging.WARNING and message.startswith("failed to reach any of the inventories") \
                and "ConnectionError" in message:
            unreachable = ", ".join(re.findall(r"intersphinx inventory '([^']+)'", message))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = f"offline: {unreachable} not reachable, references render as plain text\n", ()
        return True


def setup(app):
    # sphinx.util.logging prefixes its logger names with "sphinx."
    logging.getLogger("sphinx.sphinx.ext.intersphinx").addFilter(_OfflineInventories())


html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build", "_inventories"]
