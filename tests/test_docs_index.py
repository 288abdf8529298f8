"""docs/api.rst, the API index, lists every public module (one page each) and every name of ``catrs_plugin.__all__``.

A module added to the code without a line in the index would have no API page; a line left
behind by a removed module would break the docs build. Both are caught here without building
the docs (nothing is imported).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "docs" / "api.rst"
PACKAGES = {"catrs_plugin": ROOT / "catrs_plugin", "catrs_adapters": ROOT / "adapters" / "catrs_adapters"}


def public_modules() -> set[str]:
    """Every module file whose dotted path has no part starting with ``_`` (``__init__`` names its package)."""
    found = set()
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = (name, *path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not any(part.startswith("_") for part in parts):
                found.add(".".join(parts))
    return found


def index_entries() -> list[tuple[str, str, bool]]:
    """``(full name, current module, has toctree)`` of every autosummary entry of the index."""
    entries, current, table, toctree = [], "", False, False
    for line in INDEX.read_text().splitlines():
        directive = re.match(r"\.\. (automodule|currentmodule|autosummary)::\s*(\S*)", line)
        if directive:
            kind, argument = directive.groups()
            table, toctree = kind == "autosummary", False
            current = argument if kind != "autosummary" else current
        elif table and line.startswith("   :toctree:"):
            toctree = True
        elif table and re.match(r"   [~\w]", line) and not line.startswith("   :"):
            entries.append((f"{current}.{line.strip().lstrip('~')}", current, toctree))
        elif line and not line.startswith(" "):
            table = False
    return entries


def exported_names() -> set[str]:
    """``catrs_plugin.__all__``, read from the source: the keys of ``_EXPORTS``, the public names it imports lazily."""
    tree = ast.parse((PACKAGES["catrs_plugin"] / "__init__.py").read_text())
    values = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
              for target in node.targets if isinstance(target, ast.Name)}
    assert ast.unparse(values["__all__"]) == "sorted(_EXPORTS)"
    return {key.value for key in values["_EXPORTS"].keys}


def test_every_public_module_has_a_page_and_every_page_a_module():
    pages = {name for name, _, toctree in index_entries() if toctree}
    packages = set(re.findall(r"^\.\. automodule:: (\S+)", INDEX.read_text(), re.M))
    assert sorted(public_modules() - pages - packages) == [], "modules missing from docs/api.rst"
    assert sorted(pages - public_modules()) == [], "docs/api.rst lists modules that do not exist"


def test_the_public_names_are_those_of_catrs_plugin_all():
    listed = {name.rpartition(".")[2] for name, current, toctree in index_entries()
              if current == "catrs_plugin" and not toctree}
    assert listed == exported_names()
