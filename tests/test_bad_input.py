"""No raw tracebacks on bad input: one line naming the argument, exit status 2, nothing written.

The fuzz test feeds seeded random, truncated and mutated files to every reader of the
package and requires either a correct read or the one clean error (a ``ValueError`` naming
the file) every time.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from catrs_adapters.data.cifar import read_cifar_batch
from catrs_adapters.data.cifar10c import read_corruption
from catrs_adapters.data.mnist import read_idx
from catrs_plugin.cli import main
from catrs_plugin.methods.base import HyperParameter, Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.tsv import CERTIFY_HEADER, ResultWriter, read_certify_results
from catrs_plugin.train import data as train_data
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.soft_labels import read_soft_labels
from catrs_plugin.utils import provenance

SETTINGS = {"model": "m", "sigma": 0.25}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "arch": "digits_cnn", "state_dict": {"w": torch.arange(6.0).view(2, 3)}}, buffer)
    return buffer.getvalue()


def _idx() -> bytes:
    return bytes([0, 0, 8, 3]) + np.array([4, 2, 2], dtype=">u4").tobytes() + bytes(range(16))


_TSV = ("\t".join(CERTIFY_HEADER) + "\n" + "".join(
    f"{i}\t{i % 10}\t{i % 10}\t0.{i}5\t1\t0:00:01.{i}00000\n" for i in range(6))).encode()
_IMAGES = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
_LABELS = np.arange(10, dtype=np.uint8) % 3


def _read_corruption(folder: Path):
    return read_corruption("fog", folder.parent)


def _resume_writer(path: Path):
    provenance.write_record(path, SETTINGS)
    ResultWriter(path, SETTINGS).close()


#: reader name -> (file name, valid content, read(path) or read(folder) for the corruption files)
READERS = {
    "checkpoint": ("model.pt", _checkpoint(), read_checkpoint),
    "result file": ("results.tsv", _TSV, read_certify_results),
    "resumed result file": ("results.tsv", _TSV, _resume_writer),
    "soft labels": ("soft.npy", _npy(np.full((5, 10), 0.1, np.float32)), lambda p: read_soft_labels(p, 5, 10)),
    "IDX": ("t10k-labels-idx1-ubyte", _idx(), read_idx),
    "gzipped IDX": ("t10k-labels-idx1-ubyte.gz", gzip.compress(_idx()), read_idx),
    "CIFAR batch": ("data_batch_1", pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]},
                                                 protocol=2), lambda p: read_cifar_batch(p, "labels")),
    "CIFAR-10-C images": ("fog.npy", _npy(_IMAGES), lambda p: _read_corruption(p.parent)),
    "CIFAR-10-C labels": ("labels.npy", _npy(_LABELS), lambda p: _read_corruption(p.parent)),
    "provenance record": ("x.tsv.provenance.json", json.dumps(SETTINGS).encode(),
                          lambda p: provenance.read_record(p.with_name("x.tsv"))),
}


def _cases(valid: bytes, rng: np.random.Generator, empty_is_valid: bool) -> list[tuple[str, bytes, bool]]:
    """(description, content, must fail): garbage must fail; truncated or mutated files may still be valid."""
    cases = [("empty", b"", not empty_is_valid), ("text", b"hello world\n", True)]
    cases += [(f"random {n} bytes", rng.bytes(n), True) for n in rng.integers(1, 3000, 10)]
    cases += [(f"first {n} bytes", valid[:n], False) for n in {1, len(valid) - 1, *rng.integers(1, len(valid), 10)}]
    for _ in range(10):
        mutated = bytearray(valid)
        for position in rng.integers(0, len(valid), rng.integers(1, 4)):
            mutated[position] = int(rng.integers(0, 256))
        cases.append(("mutated", bytes(mutated), False))
    return cases


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_fails_cleanly_on_damaged_files(reader, tmp_path):
    name, valid, read = READERS[reader]
    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    (folder / "fog.npy").write_bytes(_npy(_IMAGES))
    (folder / "labels.npy").write_bytes(_npy(_LABELS))
    path = folder / name
    path.write_bytes(valid)
    read(path)  # the valid file reads: the failures below come from the damage
    rng = np.random.default_rng(sorted(READERS).index(reader))
    problems = []
    # An empty result file is one whose run was killed before the header was written: it restarts.
    for description, content, must_fail in _cases(valid, rng, empty_is_valid=reader == "resumed result file"):
        path.write_bytes(content)
        try:
            read(path)
        except ValueError as error:
            if name not in str(error) or "\n" in str(error):
                problems.append(f"{description}: message does not name the file on one line: {error}")
            continue
        except Exception as error:  # noqa: BLE001 - the point of the test
            problems.append(f"{description}: {type(error).__name__}: {error}")
            continue
        if must_fail:
            problems.append(f"{description}: read without an error")
    assert not problems, "\n".join(problems[:10])


def _one_line_error(capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    error = captured.err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, error
    return error


@pytest.fixture
def checkpoint(digits_checkpoint):
    return digits_checkpoint


def _certify(checkpoint, outfile, *extra) -> int:
    return main(["certify", "digits", str(checkpoint), "0.25", str(outfile), "--N", "100", "--max", "2",
                 "--quiet", "--device", "cpu", *extra])


@pytest.mark.parametrize("content,reason", [
    (b"hello world\n", "neither a zip archive"),
    (b"", "the file is empty"),
    (b"\x80\x02garbage", "not a PyTorch checkpoint"),
])
def test_a_file_that_is_no_checkpoint(tmp_path, capsys, content, reason):
    bad = tmp_path / "text.pt"
    bad.write_bytes(content)
    assert _certify(bad, tmp_path / "o.tsv") == 2
    _one_line_error(capsys, "catrs certify: error: base_classifier: checkpoint", "text.pt", reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.pt"]


def test_output_paths_that_cannot_be_written(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert _certify(checkpoint, tmp_path / "file" / "o.tsv") == 2
    _one_line_error(capsys, "outfile", "cannot be created:", "file' is a file, not a folder")
    assert _certify(checkpoint, tmp_path) == 2
    _one_line_error(capsys, "outfile", "is a folder")
    if Path("/proc/self").is_dir():
        assert _certify(checkpoint, "/proc/a.tsv") == 2
        _one_line_error(capsys, "outfile '/proc/a.tsv' cannot be written")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)  # a folder this process may not write to
    assert _certify(checkpoint, tmp_path / "sub" / "o.tsv") == 2
    _one_line_error(capsys, "outfile", "cannot create files in", "Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that file modes apply to")
def test_a_read_only_folder_is_refused(checkpoint, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        assert _certify(checkpoint, folder / "o.tsv") == 2
        _one_line_error(capsys, "outfile", "cannot create files in")
    finally:
        folder.chmod(0o700)


def test_train_checks_its_checkpoint_path_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the checkpoint path was checked")

    monkeypatch.setattr(train_data, "training_data", no_work)
    (tmp_path / "file").write_text("x")
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--checkpoint",
                 str(tmp_path / "file" / "c.pt")]) == 2
    _one_line_error(capsys, "--checkpoint", "is a file, not a folder")


@pytest.mark.parametrize("override,message", [
    ("lbd=abc", "--hp lbd must be a number >= 0, got 'abc'"),
    ("lbd=-1", "--hp lbd must be a number >= 0, got -1"),
    ("num_noise_vec=0", "--hp num_noise_vec must be an integer >= 1, got 0"),
    ("num_noise_vec=2.5", "--hp num_noise_vec must be an integer >= 1, got 2.5"),
    ("confidence_mask=maybe", "--hp confidence_mask must be True or False, got 'maybe'"),
    ("warmup=nan", "--hp warmup must be an integer >= 0 or None, got 'nan'"),
    ("lambda=3", "method 'catrs' has no hyper-parameter 'lambda'; valid:"),
])
def test_hyperparameters_are_checked_when_parsed(tmp_path, capsys, monkeypatch, override, message):
    monkeypatch.setattr(train_data, "training_data", lambda *a: pytest.fail("data loaded"))
    assert main(["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--checkpoint",
                 str(tmp_path / "c.pt"), "--hp", override]) == 2
    _one_line_error(capsys, message)
    assert not any(tmp_path.iterdir())


def test_every_builtin_method_declares_its_hyperparameters_and_its_presets_fit():
    for method in get_registry().methods.values():
        if method.name not in ("catrs", "gaussian", "stability", "smoothadv", "macer", "consistency", "smoothmix"):
            continue
        assert set(method.declared) == set(method.defaults), method.name
        for table in method.presets.values():
            for sigma in table:
                method.hyperparameters(sigma, next(p for p, t in method.presets.items() if t is table))
    catrs = get_registry().method("catrs")
    assert catrs.hyperparameters(lbd=2)["lbd"] == 2.0 and isinstance(catrs.hyperparameters(lbd=2)["lbd"], float)
    assert catrs.hyperparameters(confidence_mask="true")["confidence_mask"] is True
    with pytest.raises(ValueError, match="hyper-parameter 'num_steps' of method 'catrs' must be an integer >= 1"):
        catrs.hyperparameters(num_steps=0)


def test_methods_without_declarations_keep_working():
    method = Method("third_party", "a paper", lambda model, batch, **hp: torch.zeros(()), {"weight": 1.0})
    assert method.hyperparameters(weight="anything") == {"weight": "anything"}
    declared = Method("typed", "a paper", lambda model, batch, **hp: torch.zeros(()), {"weight": 1.0},
                      declared={"weight": HyperParameter(float, minimum=0, positive=True)})
    with pytest.raises(ValueError, match="must be a number > 0, got 0"):
        declared.hyperparameters(weight=0)
    assert HyperParameter(int, minimum=0, optional=True).describe() == "an integer >= 0 or None"


def test_cuda_requested_without_cuda(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _certify(checkpoint, tmp_path / "o.tsv", "--device", "cuda") == 2
    _one_line_error(capsys, "--device cuda: CUDA is not available")
    with pytest.raises(ValueError, match="CUDA is not available"):
        read_checkpoint(checkpoint, map_location="cuda")
    assert not any(tmp_path.iterdir())


def test_analyze_names_the_file_it_cannot_use(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    _one_line_error(capsys, f"FILE {str(tmp_path)!r} is a folder", "--corruptions")
    header_only = tmp_path / "header.tsv"
    header_only.write_text("\t".join(CERTIFY_HEADER) + "\n")
    assert main(["analyze", str(header_only)]) == 2
    _one_line_error(capsys, "header.tsv", "holds no result rows")
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(bytes(range(256)))
    assert main(["analyze", str(binary)]) == 2
    _one_line_error(capsys, "binary.tsv", "is not a UTF-8 text file")
    assert main(["analyze", "--corruptions", str(header_only)]) == 2
    _one_line_error(capsys, "is a file; --corruptions takes folders")


@pytest.mark.parametrize("arguments,message", [
    (["--batch", "0"], "argument --batch: must be an integer >= 1 or auto, got '0'"),
    (["--N", "-5"], "argument --N: must be an integer >= 1, got '-5'"),
    (["--skip", "x"], "argument --skip: must be an integer >= 1, got 'x'"),
])
def test_argument_errors_are_one_line(checkpoint, tmp_path, capsys, arguments, message):
    assert _certify(checkpoint, tmp_path / "o.tsv", *arguments) == 2
    _one_line_error(capsys, "catrs certify: error: " + message)


@pytest.mark.parametrize("content,reason", [
    (b"garbage", "does not start with the .npy signature"),
    (pickle.dumps({"a": 1}), "does not start with the .npy signature"),
    (_npy(np.array([{"a": 1}], dtype=object)), "holds Python objects, which are never unpickled"),
    (_npy(np.full((3, 10), 0.1)), "soft.npy' must have shape (1438, 10)"),
])
def test_soft_labels_that_are_not_soft_labels(tmp_path, capsys, content, reason):
    soft = tmp_path / "soft.npy"
    soft.write_bytes(content)
    assert main(["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--checkpoint",
                 str(tmp_path / "c.pt"), "--soft-labels", str(soft), "--device", "cpu"]) == 2
    error = _one_line_error(capsys, "--soft-labels", reason)
    assert "allow_pickle" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npy"]
