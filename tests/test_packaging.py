"""What the wheel and the sdist tell a package index: licence, URLs, classifiers, keywords, description.

The files are built from the checkout with hatchling, offline (as tests/test_install.py builds
them), and read back as an index reads them: the wheel's ``METADATA`` and ``.dist-info/licenses/``,
the sdist's ``PKG-INFO`` and files. Nothing here imports torch or the package, so the file also
runs on interpreters without the dependencies: ``python -m pytest --noconftest tests/test_packaging.py``
with hatchling and pytest importable.
"""

from __future__ import annotations

import configparser
import email
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LICENSE = ROOT / "LICENSE"


def _build(kind: str, out: Path) -> Path:
    code = f"from hatchling.build import build_{kind}; print(build_{kind}({str(out)!r}))"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME",)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    with zipfile.ZipFile(_build("wheel", tmp_path_factory.mktemp("wheel"))) as archive:
        yield archive


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    with tarfile.open(_build("sdist", tmp_path_factory.mktemp("sdist"))) as archive:
        yield archive


def _metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def _sdist_file(sdist: tarfile.TarFile, path: str) -> str:
    (member,) = [member for member in sdist.getmembers() if member.name.split("/", 1)[-1] == path]
    return sdist.extractfile(member).read().decode()


def test_the_licence_file_is_mit_as_declared():
    text = LICENSE.read_text()
    assert text.startswith("MIT License\n\nCopyright (c) ")
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_wheel_and_sdist_carry_the_licence_and_declare_it(wheel, sdist):
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    (licence,) = [name for name in wheel.namelist() if name.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(licence).decode() == LICENSE.read_text()
    assert _sdist_file(sdist, "LICENSE") == LICENSE.read_text()
    pkg_info = email.message_from_string(_sdist_file(sdist, "PKG-INFO"))
    assert pkg_info["License-Expression"] == "MIT" and pkg_info.get_all("License-File") == ["LICENSE"]


def _tox_pythons() -> list[str]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    (line,) = [line for line in tox["tox"]["labels"].splitlines() if line.strip().startswith("pythons")]
    return [f"{env[2]}.{env[3:]}" for env in re.findall(r"py3\d+", line)]


def test_classifiers_keywords_and_urls(wheel):
    import trove_classifiers  # a dependency of hatchling

    metadata = _metadata(wheel)
    classifiers = metadata.get_all("Classifier")
    assert classifiers and set(classifiers) <= trove_classifiers.classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression replaces them
    python = re.compile(r"Programming Language :: Python :: (3\.\d+)")
    versions = [match.group(1) for match in map(python.fullmatch, classifiers) if match]
    assert versions == _tox_pythons()  # the versions the tests run on (`tox -m pythons`)
    minimum = re.fullmatch(r">=(3\.\d+)", metadata["Requires-Python"]).group(1)
    assert versions[0] == minimum
    keywords = [word.strip() for word in metadata["Keywords"].split(",")]
    assert {"randomized smoothing", "certified robustness", "CAT-RS"} <= set(keywords)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert urls and all(url.startswith("https://") for url in urls.values())
    assert "https://arxiv.org/abs/2212.09000" in urls.values()  # the CAT-RS paper


#: Link and image targets of markdown (``[text](target)``, ``<target>``) and of HTML (``href``, ``src``).
TARGETS = re.compile(r"\]\(\s*<?([^)\s>]+)|<(https?://[^>]+)>|(?:href|src)=[\"']([^\"']+)")


def test_the_index_description_has_no_links_that_break_outside_the_repository(wheel):
    metadata = _metadata(wheel)
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = metadata.get_payload()
    assert description.strip() == (ROOT / "README.md").read_text().strip()
    targets = [next(group for group in match if group) for match in TARGETS.findall(description)]
    assert targets  # the parser finds the links there are
    relative = [target for target in targets if not target.startswith(("https://", "http://", "#"))]
    assert relative == [], f"relative links, which break on the package index: {relative}"
