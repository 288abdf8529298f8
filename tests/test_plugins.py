"""Third-party plugins: the example package is installed, listed and run; a broken one is named and skipped.

The example package (``examples/catrs-example-plugin``) is pip-installed without network or
build isolation into a temporary directory that is put on ``sys.path``; entry points are read
from there like from site-packages. The broken plugins get a ``dist-info`` written on the fly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from catrs_plugin.cli import main
from catrs_plugin.registry import refresh_registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "catrs-example-plugin"
BUILT_INS = {"gaussian", "stability", "smoothadv", "macer", "consistency", "smoothmix", "catrs"}


@pytest.fixture
def on_path(monkeypatch):
    """Put directories on ``sys.path`` for one test; the registry is reloaded before and after."""

    def add(directory: Path) -> None:
        monkeypatch.syspath_prepend(str(directory))
        refresh_registry()

    yield add
    monkeypatch.undo()
    refresh_registry()


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def test_example_plugin_is_listed_and_compared(installed_example, on_path, tmp_path, capsys):
    on_path(installed_example)
    assert main(["methods", "--format", "json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert BUILT_INS | {"gaussian-ls"} <= set(listed)
    assert listed["gaussian-ls"]["hyperparameters"] == {"smoothing": 0.1}
    assert main(["methods"]) == 0
    assert "gaussian-ls: Szegedy et al." in capsys.readouterr().out

    code = main(["compare", "--dataset", "digits", "--methods", "gaussian-ls", "--sigma", "0.5", "--preset", "quick",
                 "--output", str(tmp_path), "--epochs", "1", "--N0", "20", "--N", "100", "--alpha", "0.01",
                 "--skip", "1", "--max", "5", "--train-examples", "64", "--quiet"])
    assert code == 0
    summary = json.loads((tmp_path / "noise_0.5" / "summary.json").read_text())
    assert [(m["method"], m["preset"], m["n"]) for m in summary["methods"]] == [("gaussian-ls", "paper", 5)]


def write_plugin(site: Path, name: str, module_source: str) -> None:
    """A distribution ``name`` with one module and a ``catrs`` entry point to it, as pip would leave it."""
    module = f"catrs_test_{name}"
    (site / f"{module}.py").write_text(module_source)
    info = site / f"catrs_test_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: catrs-test-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[catrs]\n{name} = {module}\n")


def test_broken_plugins_are_named_and_skipped(tmp_path, on_path, capsys):
    write_plugin(tmp_path, "broken_import", "raise ImportError('needs a package that is not installed')\n")
    write_plugin(tmp_path, "broken_hook", (
        "from catrs_plugin.hookspecs import hookimpl\n\n"
        "@hookimpl\n"
        "def catrs_register_methods():\n"
        "    raise RuntimeError('hook exploded')\n"
    ))
    with pytest.warns(RuntimeWarning) as warned:
        on_path(tmp_path)
    assert {"broken_import", "broken_hook"} <= {name for w in warned for name in ("broken_import", "broken_hook")
                                                 if name in str(w.message)}
    assert main(["methods", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert BUILT_INS <= {item["name"] for item in json.loads(captured.out)}
    assert "plugin 'broken_import' failed to load" in captured.err and "needs a package" in captured.err
    assert "plugin 'broken_hook' failed" in captured.err and "hook exploded" in captured.err
