"""The package installs every way users install it, each checked in a fresh virtual environment.

The install tests make an empty virtual environment (``venv --without-pip``) whose only other site
directory is a view of the running environment's site-packages *without* catrs-plugin (symbolic
links to every other entry, its ``.pth`` files processed): the dependencies, pip and hatchling
come from there, so nothing is downloaded (``--no-index --no-deps --no-build-isolation``). Our
package is then installed editable or with ``--target``, and a fresh interpreter checks what a user would try first: ``import timm`` then
``timm.create_model("cifar_resnet110")``, ``from art.defences.trainer import CATRSTrainer`` and
``catrs --version``. Everything runs outside the checkout, so nothing is imported from it by
accident. The regular install from a wheel is what ``tox -e py`` runs the whole suite on; here
the wheel built from the sdist is checked to hold the same files.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import catrs_plugin

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: Names in site-packages that belong to an installed catrs-plugin (regular or editable).
OURS = ("catrs_plugin", "catrs_adapters", "_editable_impl_catrs_plugin", "__editable__.catrs_plugin",
        "__editable___catrs_plugin")

#: What a user tries first, in a fresh interpreter; prints one JSON object.
CHECK = """
import json, subprocess, sys, sysconfig
from pathlib import Path
out = {}
import timm
out["imported_by_timm"] = sorted(m for m in sys.modules if m.startswith("catrs_plugin"))
model = timm.create_model("cifar_resnet110", num_classes=10)
out["parameters"] = sum(p.numel() for p in model.parameters())
out["data_config"] = timm.data.resolve_data_config({}, model=model)
from art.defences.trainer import CATRSTrainer
from art.estimators.certification.randomized_smoothing import PyTorchCATRS
out["art"] = [CATRSTrainer.__module__, PyTorchCATRS.__module__]
import catrs_adapters, catrs_plugin
out["files"] = [catrs_plugin.__file__, catrs_adapters.__file__]
out["typed"] = [(Path(m.__file__).parent / "py.typed").is_file() for m in (catrs_plugin, catrs_adapters)]
script = Path(sysconfig.get_path("scripts")) / "catrs"
out["version"] = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
print(json.dumps(out))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", **extra)
    return env


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory) -> Path:
    """The running environment's site-packages without catrs-plugin, as a directory of links."""
    view = tmp_path_factory.mktemp("dependencies")
    for directory in dict.fromkeys(site.getsitepackages()):
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            if entry.lower().replace("-", "_").startswith(OURS) or (view / entry).exists():
                continue
            (view / entry).symlink_to(Path(directory) / entry)
    return view


@pytest.fixture
def fresh_python(tmp_path, dependencies) -> Path:
    """The interpreter of a new virtual environment that sees the dependencies but not our package."""
    env = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=tmp_path)
    python = env / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path)
    Path(purelib.strip(), "zz_dependencies.pth").write_text(f"import site; site.addsitedir({str(dependencies)!r})\n")
    probe = "import importlib.util as u; print(u.find_spec('catrs_plugin'), u.find_spec('torch') is not None)"
    assert _run([str(python), "-c", probe], cwd=tmp_path, env=_clean_env()).split() == ["None", "True"]
    return python


def _pip(python: Path, *args: str, cwd: Path) -> str:
    return _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                 *args], cwd=cwd, env=_clean_env())


def _check(python: Path, cwd: Path, env: dict[str, str] | None = None) -> dict:
    return json.loads(_run([str(python), "-c", CHECK], cwd=cwd, env=env or _clean_env()).splitlines()[-1])


def _assert_works(out: dict) -> None:
    assert out["imported_by_timm"] == []  # registering with timm imports none of our code
    assert out["parameters"] == 1_730_714
    assert out["data_config"]["input_size"] == [3, 32, 32]
    assert out["data_config"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert out["art"] == ["catrs_adapters.art.trainer", "catrs_adapters.art.estimator"]
    assert out["typed"] == [True, True]
    assert out["version"].strip() == f"catrs {catrs_plugin.__version__}"


def test_editable_install_in_a_fresh_venv(fresh_python, tmp_path):
    _pip(fresh_python, "--editable", str(ROOT), cwd=tmp_path)
    out = _check(fresh_python, tmp_path)
    _assert_works(out)
    # editable: the modules are the checkout's files, so edits take effect without reinstalling
    assert out["files"] == [str(ROOT / "catrs_plugin" / "__init__.py"),
                            str(ROOT / "adapters" / "catrs_adapters" / "__init__.py")]


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def test_sdist_then_wheel_equals_the_wheel_from_the_checkout(tmp_path):
    """The sdist holds everything the wheel needs (tox installs the wheel built straight from the checkout)."""
    dist = tmp_path / "dist"
    build = f"from hatchling.build import build_sdist, build_wheel; print(build_{{}}({str(dist)!r}))"
    sdist = dist / _run([sys.executable, "-c", build.format("sdist")], cwd=ROOT, env=_clean_env()).strip()
    direct = dist / _run([sys.executable, "-c", build.format("wheel")], cwd=ROOT, env=_clean_env()).strip()
    from_sdist = tmp_path / "from-sdist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", str(from_sdist), str(sdist)], cwd=tmp_path, env=_clean_env())
    (wheel,) = from_sdist.glob("*.whl")
    names = _wheel_names(wheel)
    assert names == _wheel_names(direct)
    assert {"catrs_adapters.pth", "catrs_adapters.start", "catrs_plugin/py.typed", "catrs_adapters/py.typed",
            "catrs_adapters/hook.py", "catrs_adapters/timm_models.py", "catrs_plugin/cli/__init__.py"} <= names
    assert not any(name.startswith(("adapters/", "tests/", "docs/")) for name in names)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("catrs_adapters.start").decode().strip() == "catrs_adapters.hook:install"
        assert archive.read("catrs_adapters.pth").decode().strip() == (
            "import catrs_adapters.hook; catrs_adapters.hook.install()"
        )


TARGET_CHECK = """
import json, sys
out = {}
import timm
out["timm_before"] = timm.is_model("cifar_resnet110")   # .pth files are not read from PYTHONPATH
from catrs_plugin import CATRSTrainer, PyTorchCATRS      # the path that never depends on the hook
out["from_catrs_plugin"] = [CATRSTrainer.__module__, PyTorchCATRS.__module__]
out["timm_after"] = timm.is_model("cifar_resnet110")     # importing catrs_adapters installed the hook
from art.defences.trainer import CATRSTrainer as via_art
out["art"] = via_art is CATRSTrainer
import catrs_plugin
out["file"] = catrs_plugin.__file__
print(json.dumps(out))
"""


def test_target_install_with_pythonpath(fresh_python, tmp_path):
    target = tmp_path / "target"
    _pip(fresh_python, "--target", str(target), str(ROOT), cwd=tmp_path)
    env = _clean_env(PYTHONPATH=str(target))
    out = json.loads(_run([str(fresh_python), "-c", TARGET_CHECK], cwd=tmp_path, env=env).splitlines()[-1])
    assert out == {"timm_before": False, "from_catrs_plugin": ["catrs_adapters.art.trainer",
                                                               "catrs_adapters.art.estimator"],
                   "timm_after": True, "art": True, "file": str(target / "catrs_plugin" / "__init__.py")}
    version = _run([str(fresh_python), str(target / "bin" / "catrs"), "--version"], cwd=tmp_path, env=env)
    assert version.strip() == f"catrs {catrs_plugin.__version__}"
