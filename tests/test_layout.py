"""The core's layout: one folder per job, imports pointing only down the layers, no file importing another back.

Every ``import`` statement of every file under ``catrs_plugin/`` counts, also those inside
functions and under ``if TYPE_CHECKING:``: a lazy import that would form a cycle is still a
cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "catrs_plugin"

#: The layers from the bottom up: a file may import its own layer and those listed before it.
LAYERS = ("utils", "backbones", "results", "certify", "methods", "plugins", "train", "compare", "cli")

#: What the core never imports (design rule: the adapters import the core, not the reverse).
FORBIDDEN = ("catrs_adapters", "art", "timm", "robustbench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ``known`` (or forbidden top-level name) that ``path`` imports, resolved to files."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub where one exists, else names of pkg.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and target.split(".")[0] not in FORBIDDEN:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def test_every_subpackage_is_a_layer():
    folders = {path.parent.name for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE}
    assert folders == set(LAYERS)
    assert not [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"], \
        "modules belong in a subpackage: the top level only re-exports"


def test_subpackages_open_with_what_they_do_and_may_import():
    for folder in LAYERS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())) or ""
        assert "import" in " ".join(docstring.splitlines()[:2]).lower(), f"{folder}/__init__.py: say what it may import"


def test_imports_point_down_the_layers(graph):
    upward = []
    for source, targets in graph.items():
        if layer(source) is None:
            continue  # the top-level __init__ re-exports the public API of every layer
        for target in targets:
            if target.split(".")[0] in FORBIDDEN:
                upward.append(f"{source} imports {target}, which the core must not depend on")
            elif target == "catrs_plugin":
                if source != "catrs_plugin.cli":  # `catrs --version`
                    upward.append(f"{source} imports the top-level package; import the module itself")
            elif LAYERS.index(layer(target)) > LAYERS.index(layer(source)):
                upward.append(f"{source} ({layer(source)}) imports {target} ({layer(target)})")
    assert not upward, "\n".join(upward)


def test_no_file_imports_one_that_imports_it_back(graph):
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """Negative control: the same walk on a fake tree with both faults reports both."""
    fake = tmp_path / "catrs_plugin"
    for folder, text in {"utils": "from catrs_plugin.train import loop\n", "train": ""}.items():
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text(text)
    (fake / "__init__.py").write_text("")
    (fake / "train" / "loop.py").write_text("import catrs_plugin.train.data\n")
    (fake / "train" / "data.py").write_text("from catrs_plugin.train import loop\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    known = modules()
    fake_graph = {name: imported(path, known) for name, path in known.items()}
    with pytest.raises(AssertionError, match="utils .* imports catrs_plugin.train.loop"):
        test_imports_point_down_the_layers(fake_graph)
    with pytest.raises(AssertionError, match="catrs_plugin.train.data -> catrs_plugin.train.loop"):
        test_no_file_imports_one_that_imports_it_back(fake_graph)
