"""Sphinx configuration for catrs-plugin."""

project = "catrs-plugin"
author = "catrs-plugin developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
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

html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
