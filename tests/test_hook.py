"""The start-up hook (catrs_adapters.hook), each claim checked in a fresh interpreter.

Its start-up cost is measured by ``benchmarks/startup.py`` (figures in docs/benchmarks.rst),
not here. The ART import path itself is tested in test_art.py, timm's in test_backbones.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

import catrs_adapters
from catrs_adapters import hook

#: The folder that holds the package catrs_adapters (``adapters/`` in a checkout, site-packages when installed).
PACKAGE_PARENT = str(Path(catrs_adapters.__file__).resolve().parents[1])


def _python(code: str, *flags: str, timeout: int = 300) -> str:
    done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _marked(meta_path) -> int:
    return sum(bool(getattr(finder, "_catrs_adapters_hook", False)) for finder in meta_path)


def test_the_hook_imports_only_itself():
    """No site processing (-S): what importing and installing the hook adds to sys.modules, and nothing else."""
    code = (f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); before = set(sys.modules)\n"
            "import catrs_adapters.hook; catrs_adapters.hook.install()\n"
            "print(sorted(set(sys.modules) - before))")
    assert _python(code, "-S") == "['catrs_adapters', 'catrs_adapters.hook']"


def _site_dir_with_our_pth() -> Path:
    for directory in site.getsitepackages():
        if (Path(directory) / "catrs_adapters.pth").is_file():
            return Path(directory)
    pytest.skip("catrs-plugin is not installed in a site directory (e.g. run from PYTHONPATH)")


def test_interpreter_start_up_installs_the_finder_and_nothing_heavy():
    _site_dir_with_our_pth()
    code = ("import json, sys\n"
            "print(json.dumps([sum(bool(getattr(f, '_catrs_adapters_hook', False)) for f in sys.meta_path),\n"
            "                  [m for m in ('torch', 'timm', 'art', 'catrs_plugin') if m in sys.modules]]))")
    assert json.loads(_python(code)) == [1, []]


def test_pep_829_start_file_installs_the_hook_where_pth_import_lines_are_ignored():
    """Python >= 3.15 calls the ``.start`` file's entry point instead of the ``.pth`` file's import line.

    Emulated here without site processing (-S, so no ``.pth`` file runs): resolve the entry point
    the way site.py does (``pkgutil.resolve_name``), call it, then use timm and ART.
    """
    start = _site_dir_with_our_pth() / "catrs_adapters.start"
    (entry_point,) = start.read_text().split()
    paths = [path for path in sys.path if path]
    code = (f"import sys, pkgutil; sys.path[:] = {paths!r}\n"
            "before = sum(bool(getattr(f, '_catrs_adapters_hook', False)) for f in sys.meta_path)\n"
            f"pkgutil.resolve_name({entry_point!r})()\n"
            "after = sum(bool(getattr(f, '_catrs_adapters_hook', False)) for f in sys.meta_path)\n"
            "import timm\n"
            "from art.defences.trainer import CATRSTrainer\n"
            "print(before, after, timm.is_model('cifar_resnet110'), CATRSTrainer.__module__)")
    assert _python(code, "-S") == "0 1 True catrs_adapters.art.trainer"


def test_a_broken_timm_registration_does_not_break_import_timm():
    _site_dir_with_our_pth()
    code = ("import sys; sys.modules['catrs_adapters.timm_models'] = None  # makes its import fail\n"
            "import timm; print(timm.is_model('cifar_resnet110'), timm.is_model('resnet50'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["False", "True"]
    assert "catrs-plugin could not register its backbones with timm" in done.stderr


def test_install_is_idempotent_even_from_a_second_copy():
    import art.defences.trainer as trainers

    hook.install()
    patched = trainers.__getattr__
    hook.install()
    # a second copy of the module (e.g. an editable and a regular install on one path) adds no second finder
    spec = importlib.util.spec_from_file_location("catrs_hook_copy", hook.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    copy.install()
    assert _marked(sys.meta_path) == 1
    assert trainers.__getattr__ is patched
    assert trainers.CATRSTrainer.__module__ == "catrs_adapters.art.trainer"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchTrainer'"):
        trainers.NoSuchTrainer


def test_the_finder_leaves_other_modules_alone_and_defers_to_the_other_finders():
    finder = hook.Finder()
    assert finder.find_spec("json", None) is None
    spec = finder.find_spec("timm", None)
    assert type(spec.loader).__name__ == "_Loader"
    assert spec.origin == importlib.util.find_spec("timm").origin




#: Start-up as Python runs it, emulated without site processing (-S, so that no installed ``.pth`` file
#: runs): ``os`` imported first, as site.py imports it, then the line of our ``.pth`` file or the entry
#: point of our ``.start`` file, with CATRS_NO_STARTUP_HOOK set; then what a user tries; then the same
#: without the variable (the negative control).
START_UP = """
import json, os, pkgutil, sys
sys.path[:] = {paths!r}
kind, text, variable = {kind!r}, {text!r}, {variable!r}
exec(text) if kind == "pth" else pkgutil.resolve_name(text)()
hooked = lambda: any(getattr(f, "_catrs_adapters_hook", False) for f in sys.meta_path)
out = {{"hook": hooked()}}
import timm
out["timm"] = timm.is_model("cifar_resnet110")
try:
    from art.defences.trainer import CATRSTrainer
    out["art"] = True
except ImportError:
    out["art"] = False
from catrs_plugin import CATRSTrainer, get_registry  # the documented path, which never depends on the hook
out["catrs_plugin"] = CATRSTrainer.__module__
get_registry()
out["timm_after_registry"] = timm.is_model("cifar_resnet110")
del os.environ[variable]
exec(text) if kind == "pth" else pkgutil.resolve_name(text)()
from art.defences.trainer import CATRSTrainer as via_art
out["without_the_variable"] = [hooked(), via_art is CATRSTrainer]
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["pth", "start"])
def test_catrs_no_startup_hook_turns_the_hook_off_and_from_catrs_plugin_still_works(kind):
    text = (Path(PACKAGE_PARENT) / f"catrs_adapters.{kind}").read_text().strip()
    paths = [path for path in sys.path if path]
    code = START_UP.format(paths=paths, kind=kind, text=text, variable=hook.STARTUP_OPT_OUT)
    env = {**os.environ, hook.STARTUP_OPT_OUT: "1"}
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "hook": False, "timm": False, "art": False, "catrs_plugin": "catrs_adapters.art.trainer",
        "timm_after_registry": True, "without_the_variable": [True, True]}
