"""The content checks of :mod:`catrs_plugin.utils.reading`: labels, images, gzip sizes, bounded reads.

The module imports only the standard library and numpy, and these tests load it from its file,
so they run on any interpreter with numpy, also one without torch (``python3.13 -m pytest
--noconftest tests/test_reading.py``): gzip's behaviour is one of the things that changes between
Python versions.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest

MODULE = Path(__file__).resolve().parents[1] / "catrs_plugin" / "utils" / "reading.py"
spec = importlib.util.spec_from_file_location("catrs_reading_under_test", MODULE)
reading = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reading
spec.loader.exec_module(reading)


@pytest.mark.parametrize("labels,message", [
    ([1, 50, 3], "must lie in 0..9, got 50 at position 1"),
    ([1, -1, 3], "must lie in 0..9, got -1 at position 1"),
    (np.array([1.0, 2.5]), "integer class indices, got 2.5 at position 1"),
    (np.array([np.nan, 2.0]), "integer class indices, got nan at position 0"),
    (np.array(["1", "2"]), "integer class indices, got <U1 values"),
    (np.zeros((2, 10)), r"one class index per example \(shape \(n,\)\), got shape \(2, 10\)"),
])
def test_labels_that_are_no_class_indices(labels, message):
    with pytest.raises(ValueError, match=rf"^labels\.npy: labels .*{message}"):
        reading.class_labels(labels, 10, "labels.npy")


def test_class_labels_as_int64():
    for labels in ([3, 0, 9], np.array([3, 0, 9], np.uint8), np.array([3.0, 0.0, 9.0])):
        out = reading.class_labels(labels, 10, "labels")
        assert out.dtype == np.int64 and out.tolist() == [3, 0, 9]


def test_images_are_bytes_never_cast():
    assert reading.image_bytes(np.array([[0, 255]], np.int64), "batch").dtype == np.uint8
    with pytest.raises(ValueError, match="images must be stored as bytes .* got float64 values"):
        reading.image_bytes(np.array([[0.5, 1.0]]), "batch")
    with pytest.raises(ValueError, match=r"image values must lie in 0..255, got values in \[0, 256\]"):
        reading.image_bytes(np.array([[0, 256]]), "batch")


def test_gzip_trailer_and_bounded_reads(tmp_path):
    content = bytes(range(256)) * 4000  # 1,024,000 bytes
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as handle:  # closed: on Python 3.12+ an unclosed gzip file is left empty
        handle.write(content)
    assert reading.gzip_size(path) == len(content)
    (tmp_path / "short.gz").write_bytes(b"\x1f\x8b\x08")
    with pytest.raises(reading.FormatError, match="too short to be a gzip file"):
        reading.gzip_size(tmp_path / "short.gz")
    with gzip.open(path, "rb") as handle:
        assert reading.read_exactly(handle, len(content), "the header") == content
    with gzip.open(path, "rb") as handle:
        with pytest.raises(reading.FormatError, match="the header declares 10 bytes but the file holds more"):
            reading.read_exactly(handle, 10, "the header")
        assert handle.tell() == 11, "one byte more than declared is decompressed, no further"
    with pytest.raises(reading.FormatError, match="declares 5 bytes but the file holds only 3"):
        reading.read_exactly(io.BytesIO(b"abc"), 5, "the header")
