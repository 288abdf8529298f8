"""Third-party plugins: the example package is installed, listed and run; a broken one is named and skipped.

The example package (``examples/catrs-example-plugin``) is pip-installed without network or
build isolation into a temporary directory that is put on ``sys.path``; entry points are read
from there like from site-packages. The broken plugins get a ``dist-info`` written on the fly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from catrs_plugin.cli import main
from catrs_plugin.plugins.registry import get_registry, refresh_registry

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
                 "--skip", "1", "--max", "5", "--train-examples", "64", "--quiet", "--certify-collapsed"])
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
        "from catrs_plugin.plugins.hookspecs import hookimpl\n\n"
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


def _registered_plugin(site: Path, name: str, hooks: str) -> None:
    write_plugin(site, name, "from catrs_plugin.plugins.hookspecs import hookimpl\n" + textwrap.dedent(hooks))


def test_a_misspelt_hook_skips_the_plugin_naming_it_and_its_entry_point(tmp_path, on_path):
    _registered_plugin(tmp_path, "typo", """
        from catrs_plugin.methods import GAUSSIAN
        import dataclasses

        @hookimpl
        def catrs_register_method():
            return []

        @hookimpl
        def catrs_register_methods():
            return [dataclasses.replace(GAUSSIAN, name="typo-gaussian")]
    """)
    with pytest.warns(RuntimeWarning, match="catrs plugin 'typo' \\(entry point typo = catrs_test_typo\\)") as warned:
        on_path(tmp_path)
    registry = get_registry()
    reason = registry.failures["typo"]
    assert "unknown hook 'catrs_register_method' (did you mean 'catrs_register_methods'?)" in reason
    assert "[entry point typo = catrs_test_typo]" in reason
    assert "unknown hook" in str(warned[0].message)
    assert "typo-gaussian" not in registry.methods  # the whole plugin is skipped, not half of it
    assert "typo" not in registry.plugins and BUILT_INS <= set(registry.methods)


CLASHES = {
    "method": ("methods", "catrs", "core", "from catrs_plugin.methods import GAUSSIAN as ITEM\n"
               "import dataclasses\nITEM = dataclasses.replace(ITEM, name='catrs')"),
    "model": ("models", "lenet", "core", "from catrs_plugin.plugins.specs import ModelSpec\n"
              "ITEM = ModelSpec('lenet', lambda **kwargs: None)"),
    "dataset": ("datasets", "digits", "adapters", "from catrs_adapters.datasets import DIGITS as ITEM"),
    "attack": ("attacks", "art_l2_pgd", "adapters", "from catrs_adapters.art.empirical import ART_L2_PGD as ITEM"),
}


@pytest.mark.parametrize("kind", CLASHES)
def test_a_name_already_registered_skips_the_second_plugin(kind, tmp_path, on_path):
    table, name, owner, item_source = CLASHES[kind]
    plugin = f"clash_{kind}"
    _registered_plugin(tmp_path, plugin, f"""
        {item_source.replace(chr(10), chr(10) + ' ' * 8)}

        @hookimpl
        def catrs_register_{table}():
            return [ITEM]
    """)
    with pytest.warns(RuntimeWarning) as warned:
        on_path(tmp_path)
    registry = get_registry()
    # the first registration stays: the built-in object (where the plugin re-registers it, nothing changes)
    assert name in getattr(registry, table) and plugin not in registry.plugins
    if kind in ("method", "model"):
        assert getattr(registry, table)[name] is not sys.modules[f"catrs_test_{plugin}"].ITEM
    expected = (f"registers {kind} {name!r}, which plugin {owner!r} ({registry.plugins[owner]}) already "
                f"registered; rename it [entry point {plugin} = catrs_test_{plugin}]")
    assert registry.failures == {plugin: expected}
    assert any(f"catrs plugin {plugin!r} (entry point {plugin} = catrs_test_{plugin})" in str(w.message)
               for w in warned)


def test_two_plugins_with_one_method_name_keep_the_first_and_name_both(tmp_path, on_path):
    for plugin in ("first", "second"):
        _registered_plugin(tmp_path, plugin, """
            import dataclasses
            from catrs_plugin.methods import GAUSSIAN

            @hookimpl
            def catrs_register_methods():
                return [dataclasses.replace(GAUSSIAN, name="shared-name")]
        """)
    with pytest.warns(RuntimeWarning, match="registers method 'shared-name'"):
        on_path(tmp_path)
    registry = get_registry()
    (loser, reason), = registry.failures.items()
    winner = ({"first", "second"} - {loser}).pop()
    assert registry.plugins[winner] == f"catrs_test_{winner}" and "shared-name" in registry.methods
    assert reason == (f"registers method 'shared-name', which plugin {winner!r} (catrs_test_{winner}) already "
                      f"registered; rename it [entry point {loser} = catrs_test_{loser}]")


def test_a_wrong_return_type_and_a_taken_plugin_name_are_named(tmp_path, on_path):
    _registered_plugin(tmp_path, "wrong_type", """
        @hookimpl
        def catrs_register_models():
            return ["lenet"]
    """)
    write_plugin(tmp_path, "core", "")  # a third-party entry point called `core`, like our built-ins
    with pytest.warns(RuntimeWarning) as warned:
        on_path(tmp_path)
    failures = get_registry().failures
    assert failures["wrong_type"] == ("catrs_register_models returned 'lenet', not a catrs_plugin.plugins.specs.ModelSpec "
                                      "[entry point wrong_type = catrs_test_wrong_type]")
    assert failures["core = catrs_test_core"] == "the plugin name 'core' is taken by entry point core = catrs_plugin.plugins.builtins"
    assert any("catrs entry point core = catrs_test_core is skipped" in str(w.message) for w in warned)
    assert get_registry().plugins["core"] == "catrs_plugin.plugins.builtins"
