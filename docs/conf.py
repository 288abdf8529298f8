"""Sphinx configuration for catrs-plugin."""

import importlib
import logging
import re
import sys
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.ext import napoleon
from sphinx.ext.autodoc.mock import MockFinder

# timm, and torchvision, which timm imports, are mocked for the whole build: the autodoc pages
# of the few adapter modules that import them, and the gallery. No page needs them to run, and
# torchvision from PyPI, built against CUDA torch, does not even import beside the CPU build of
# torch that `tox -e docs` installs (torchvision::nms does not exist). The gallery's code never
# calls them: they are imported only where the registry loads the adapters' entry points.
sys.meta_path.insert(0, MockFinder(["timm", "torchvision"]))

import torch  # noqa: E402  (after the mock: nothing may import timm first)

from catrs_plugin import __version__  # noqa: E402

# The gallery's models are tiny (a small CNN on 8x8 digits), too small to share out among
# threads, and on a busy machine (2 cores shared by many jobs) threads spin against each other:
# there the comparison example's CAT-RS epoch took 123 s with 2 threads and 7.8 s with one.
torch.set_num_threads(1)

project = "catrs-plugin"
author = "catrs-plugin developers"
copyright = f"2026, {author} (MIT licence)"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax's files in _static/mathjax: formulas render without a network
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
]

napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# ART's own docstrings (inherited members) are not numpy-style; document only our members.
autodoc_inherit_docstrings = False
nitpicky = False

# One page per module (docs/api.rst lists them; the pages are generated into docs/api/ from
# docs/_templates/autosummary/module.rst).
autosummary_generate = True
templates_path = ["_templates"]

# The copy button copies commands and code, not prompts (">>> ", "... ", "$ ") or printed output.
copybutton_exclude = ".linenos, .gp, .go"

# The gallery: every example runs at each build (on the CPU, in seconds), and a failing one
# fails the build, so the pages never show code that does not run.
sphinx_gallery_conf = {
    "examples_dirs": "../examples/gallery",
    "gallery_dirs": "gallery",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "doc_module": ("catrs_plugin", "catrs_adapters"),
    "backreferences_dir": "api/backreferences",
    "min_reported_time": 1,
    "write_computation_times": False,  # its page loads DataTables from a CDN
}

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


_PROSE = {"attribute", "data", "property"}
OURS = ("catrs_plugin.", "catrs_adapters.")


def _numpy_docstring(app, what, name, obj, options, lines):
    """Napoleon's numpy-style parsing, with the docs of attributes, data and properties read as prose.

    Napoleon reads the first line of such a doc as ``type: description`` (Google style), so
    ``#: Phase identifiers: the ...`` rendered as a field "Type: Phase identifiers". Our
    attribute docs never state their type that way (it comes from the annotation), so they are
    parsed like any other docstring: sections still become fields, the first line stays text.
    """
    napoleon._process_docstring(app, "object" if what in _PROSE else what, name, obj, options, lines)


def _lookup(name):
    """The object a dotted name names (a module, then attributes), or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def _canonical_reference(app, env, node, contnode):
    """Resolve a Python reference to a re-exported name at the page that documents the object.

    ``:func:`catrs_plugin.load_checkpoint``` and ``:class:`~catrs_plugin.methods.Method```
    name objects by the package that re-exports them, and ``:func:`load_cifar10``` in the
    docstring of :mod:`catrs_adapters.data` by that package; their pages document them where
    they are defined (``catrs_plugin.train.checkpoint.load_checkpoint``).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith(OURS):
        target = f"{node.get('py:module') or ''}.{target}"
    obj = _lookup(target) if target.startswith(OURS) else None
    if obj is None:
        return None
    domain = env.domains["py"]
    suffix = "." + target.rpartition(".")[2]
    for name in domain.objects:
        if name != target and name.endswith(suffix) and name.startswith(OURS) and _lookup(name) is obj:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], name, node, contnode)
    return None


def setup(app):
    # sphinx.util.logging prefixes its logger names with "sphinx."
    logging.getLogger("sphinx.sphinx.ext.intersphinx").addFilter(_OfflineInventories())
    napoleons = [listener.id for listener in app.events.listeners["autodoc-process-docstring"]
                 if listener.handler is napoleon._process_docstring]
    if len(napoleons) != 1:
        raise ExtensionError(f"conf.py replaces napoleon's docstring handler, found {len(napoleons)} of them")
    app.disconnect(napoleons[0])
    app.connect("autodoc-process-docstring", _numpy_docstring)
    app.connect("missing-reference", _canonical_reference)


html_theme = "furo"
html_title = f"catrs-plugin {release}"
html_static_path = ["_static"]
exclude_patterns = ["_build", "_inventories"]
