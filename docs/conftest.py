"""The examples in these pages run as doctests (``pytest docs``, part of the default test run)."""

import pytest


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path, monkeypatch):
    """Examples write files (checkpoints) into the current directory: a fresh one per page."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
