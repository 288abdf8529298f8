"""Every bad input of issue 24, one row each: one line on stderr naming the argument, exit status 2,
no traceback, nothing written or truncated.

Each case runs ``catrs`` in this process (:func:`catrs_plugin.cli.main`) on a small set of files made
once: an untrained digits checkpoint and its variants (NaN weights, other shapes, a CIFAR-10 one),
damaged data folders (labels out of range, NaN or fractional labels, float images, 30x30 MNIST
images, a gzip bomb, an image beyond PIL's pixel limit), a FIFO. Before and after each case the
whole folder of the case is compared byte for byte: a refused command leaves it as it was.
"""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import shutil
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from catrs_plugin.cli import main
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.plugins.specs import ModelSpec
from catrs_plugin.results.tsv import CERTIFY_HEADER
from catrs_plugin.train.checkpoint import read_checkpoint, save_checkpoint

FAST = ["--N0", "10", "--N", "20", "--max", "2", "--quiet", "--device", "cpu"]
TRAIN = ["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2", "--batch", "64",
         "--quiet", "--device", "cpu"]
COMPARE = ["compare", "--dataset", "digits", "--sigma", "0.25", "--methods", "gaussian", "--epochs", "1", "--quiet",
           "--device", "cpu"]


def tiny_gap(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """A network of any input size (global average pooling), for an ImageNet checkpoint of a few bytes."""
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(get_registry().models, "tiny_gap", ModelSpec("tiny_gap", tiny_gap))


def _cifar_batch(path: Path, data, labels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=2))


def _idx(path: Path, array: np.ndarray, compress: bool = False, body: bytes | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + (array.astype(np.uint8).tobytes() if body is None else body)
    path.write_bytes(gzip.compress(content) if compress else content)


def _mnist(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    _idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", images)
    _idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    return root


def _cifar10c(root: Path, labels: np.ndarray) -> Path:
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "fog.npy", np.zeros((len(labels), 32, 32, 3), np.uint8))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_checkpoint):
    """Everything the cases read, made once; the cases never write here."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    registry = get_registry()
    payload = read_checkpoint(digits_checkpoint)
    nan = {key: torch.full_like(value, float("nan")) if value.is_floating_point() else value
           for key, value in payload["state_dict"].items()}
    save_checkpoint(root / "nan.pt", {**payload, "state_dict": nan})
    wide = dict(payload["state_dict"], **{"1.0.weight": torch.zeros(16, 3, 3, 3)})
    save_checkpoint(root / "wide.pt", {**payload, "state_dict": wide})
    cifar = registry.create_model("cifar_resnet20", "cifar10")
    save_checkpoint(root / "cifar.pt", {"arch": "cifar_resnet20", "dataset": "cifar10",
                                        "state_dict": cifar.state_dict()})
    torch.manual_seed(0)
    gap = nn.Sequential(nn.Identity(), tiny_gap(1000))  # the layout of create_model: normalisation, network
    save_checkpoint(root / "imagenet.pt", {"arch": "tiny_gap", "dataset": "imagenet",
                                          "state_dict": gap.state_dict()})
    # A training checkpoint of two epochs, and copies tampered with where a resumed run restores from them.
    trained = root / "trained.pt"
    assert main([*TRAIN, "--checkpoint", str(trained)]) == 0
    state = read_checkpoint(trained)
    save_checkpoint(root / "no_epoch.pt", {k: v for k, v in state.items() if k != "epoch"})
    save_checkpoint(root / "bad_rng.pt", {**state, "rng_state": torch.zeros(10, dtype=torch.uint8)})
    optimizer = {**state["optimizer"], "state": {0: {"momentum_buffer": torch.zeros(3)}}}
    save_checkpoint(root / "bad_momentum.pt", {**state, "optimizer": optimizer})
    rows = lambda images: np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)])  # noqa: E731
                                    for im in images])  # CIFAR's layout: all red, all green, all blue values
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for name, data, labels in [("good", rows(images), [1, 2, 3, 4]), ("labels_50", rows(images), [1, 50, 3, 4]),
                               ("labels_negative", rows(images), [1, -1, 3, 4]),
                               ("labels_fraction", rows(images), np.array([1, 2.5, 3, 4])),
                               ("labels_nan", rows(images), np.array([1, np.nan, 3, 4])),
                               ("float_images", rows(images).astype(np.float64) / 255, [1, 2, 3, 4])]:
        _cifar_batch(root / f"cifar_{name}" / "cifar-10-batches-py" / "test_batch", data, labels)
    _mnist(root / "mnist_30x30", rng.integers(0, 256, (4, 30, 30)), np.array([1, 2, 3, 4]))
    _mnist(root / "mnist_labels_200", rng.integers(0, 256, (4, 28, 28)), np.array([1, 200, 3, 4]))
    bomb = root / "mnist_bomb" / "MNIST" / "raw"
    _idx(bomb / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), compress=True, body=bytes(50_000_000))
    _idx(bomb / "t10k-labels-idx1-ubyte", np.array([1, 2, 3, 4]))
    _cifar10c(root / "c10c_labels_99", np.array([1, 2, 99, 4, 5] * 5, np.uint8))
    _cifar10c(root / "c10c_labels_nan", np.array([1, 2, np.nan, 4, 5] * 5))
    val = root / "imagenet" / "val" / "n01440764"
    val.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(val / "big.JPEG")
    tsv = root / "tsv"
    tsv.mkdir()
    header = "\t".join(CERTIFY_HEADER) + "\n"
    for name, row in [("radius_nan", "0\t1\t1\tnan\t1\t0:00:01"), ("radius_inf", "0\t1\t1\tinf\t1\t0:00:01"),
                      ("radius_negative", "0\t1\t1\t-0.5\t1\t0:00:01"), ("correct_7", "0\t1\t1\t0.5\t7\t0:00:01"),
                      ("correct_wrong", "0\t1\t2\t0.5\t1\t0:00:01"),
                      ("duplicate", "0\t1\t1\t0.5\t1\t0:00:01\n1\t2\t2\t0.25\t1\t0:00:01\n0\t1\t1\t0.5\t1\t0:00:01")]:
        (tsv / f"{name}.tsv").write_text(header + row + "\n")
    return SimpleNamespace(root=root, digits=digits_checkpoint, **{p.stem: p for p in root.glob("*.pt")})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<not a file>")
            for p in sorted(folder.rglob("*"))}


#: (case, command line with {placeholders}, fragments the one-line error must hold).
#: Placeholders: {out} (the output path, in the case's own folder), {ckpt} ... (files), {data} (the files' root).
CASES = [
    # 1. Garbage in, numbers out.
    ("nan weights", ["certify", "digits", "{nan}", "0.25", "{out}.tsv", *FAST],
     ["base_classifier", "NaN or infinite values"]),
    ("cifar10 checkpoint on digits", ["certify", "digits", "{cifar}", "0.25", "{out}.tsv", *FAST],
     ["base_classifier", "trained on cifar10", "does not fit dataset digits"]),
    ("digits checkpoint on cifar10", ["certify", "cifar10", "{digits}", "0.25", "{out}.tsv", *FAST,
                                      "--data-dir", "{data}/cifar_good"],
     ["base_classifier", "trained on digits", "does not fit dataset cifar10"]),
    ("catrs batch smaller than M", ["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25",
                                    "--checkpoint", "{out}.pt", "--batch", "3", "--teacher", "{digits}"],
     ["--batch 3 is smaller than num_noise_vec=4"]),
    ("huge num_noise_vec", ["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--checkpoint",
                            "{out}.pt", "--hp", "num_noise_vec=100000000", "--teacher", "{digits}"],
     ["--batch 256 is smaller than num_noise_vec=100000000"]),
    ("compare catrs batch smaller than M", [*COMPARE[:6], "catrs", *COMPARE[7:], "--batch", "3", "--output", "{out}"],
     ["--batch 3 is smaller than num_noise_vec=4"]),
    ("compare train-examples 0", [*COMPARE, "--train-examples", "0", "--output", "{out}"],
     ["--train-examples must be -1 (all) or an integer >= 1, got 0"]),
    ("compare train-examples -2", [*COMPARE, "--train-examples", "-2", "--output", "{out}"], ["--train-examples"]),
    ("certify max -5", ["certify", "digits", "{digits}", "0.25", "{out}.tsv", *FAST, "--max", "-5"],
     ["--max must be -1 (all) or an integer >= 1, got -5"]),
    ("compare max -3", [*COMPARE, "--max", "-3", "--output", "{out}"], ["--max must be -1 (all)"]),
    ("compare max 0", [*COMPARE, "--max", "0", "--output", "{out}"], ["--max must be -1 (all)", "got 0"]),
    ("workers -1", [*TRAIN, "--checkpoint", "{out}.pt", "--workers", "-1"], ["--workers must be an integer >= 0"]),
    ("sigma 1e308", ["certify", "digits", "{digits}", "1e308", "{out}.tsv", *FAST], ["sigma must lie in (0, 10]"]),
    ("train sigma 1e308", [*TRAIN[:5], "--sigma", "1e308", "--checkpoint", "{out}.pt"],
     ["--sigma must lie in (0, 10]"]),
    ("cifar labels 50", ["certify", "cifar10", "{cifar}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                         "{data}/cifar_labels_50"], ["--data-dir", "labels must lie in 0..9, got 50"]),
    ("cifar labels -1", ["certify", "cifar10", "{cifar}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                         "{data}/cifar_labels_negative"], ["--data-dir", "labels must lie in 0..9, got -1"]),
    ("cifar fractional labels", ["certify", "cifar10", "{cifar}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                                 "{data}/cifar_labels_fraction"], ["--data-dir", "integer class indices, got 2.5"]),
    ("cifar nan labels", ["certify", "cifar10", "{cifar}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                          "{data}/cifar_labels_nan"], ["--data-dir", "integer class indices, got nan"]),
    ("cifar float images", ["certify", "cifar10", "{cifar}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                            "{data}/cifar_float_images"], ["--data-dir", "images must be stored as bytes"]),
    ("mnist labels 200", ["certify", "mnist", "{digits}", "0.25", "{out}.tsv", *FAST, "--data-dir",
                          "{data}/mnist_labels_200"], ["--data-dir", "labels must lie in 0..9, got 200"]),
    ("mnist 30x30", ["certify", "mnist", "{digits}", "0.25", "{out}.tsv", *FAST, "--data-dir", "{data}/mnist_30x30"],
     ["--data-dir", "expected (n, 28, 28) images", "(4, 30, 30)"]),
    ("gzip bomb", ["certify", "mnist", "{digits}", "0.25", "{out}.tsv", *FAST, "--data-dir", "{data}/mnist_bomb"],
     ["--data-dir", "t10k-images-idx3-ubyte.gz", "gzip trailer records"]),
    ("cifar10c labels 99", ["certify-corruptions", "{cifar}", "0.25", "{out}", "--corruptions", "fog", "--skip", "5",
                            *FAST, "--data-dir", "{data}/c10c_labels_99"],
     ["--data-dir", "labels must lie in 0..9, got 99"]),
    ("cifar10c nan labels", ["certify-corruptions", "{cifar}", "0.25", "{out}", "--corruptions", "fog", *FAST,
                             "--data-dir", "{data}/c10c_labels_nan"], ["--data-dir", "integer class indices, got nan"]),
    ("analyze radius nan", ["analyze", "{data}/tsv/radius_nan.tsv"], ["radius_nan.tsv:2", "radius must be a finite"]),
    ("analyze radius inf", ["analyze", "{data}/tsv/radius_inf.tsv"], ["radius_inf.tsv:2", "radius must be a finite"]),
    ("analyze radius negative", ["analyze", "{data}/tsv/radius_negative.tsv"], ["radius_negative.tsv:2", ">= 0"]),
    ("analyze correct 7", ["analyze", "{data}/tsv/correct_7.tsv"], ["correct_7.tsv:2", "correct must be 1", "got 7"]),
    ("analyze correct != (predict == label)", ["analyze", "{data}/tsv/correct_wrong.tsv"],
     ["correct_wrong.tsv:2", "correct must be 0 for predict 2 and label 1"]),
    ("analyze duplicate rows", ["analyze", "--format", "json", "{data}/tsv/duplicate.tsv"],
     ["duplicate.tsv:4", "example 0 already has a row (line 2)"]),
    # 2. Raw tracebacks.
    ("certify batch 1e12", ["certify", "digits", "{digits}", "0.25", "{out}.tsv", *FAST, "--batch", "1000000000000"],
     ["--batch 1000000000000", "need 272 TB of memory"]),
    ("predict batch 1e12", ["predict", "digits", "{digits}", "0.25", "{out}.tsv", *FAST[2:], "--batch",
                            "1000000000000"], ["--batch 1000000000000", "of memory"]),
    ("smooth-predict batch 1e12", ["smooth-predict", "digits", "{digits}", "{out}.npy", "--batch", "1000000000000",
                                   "--device", "cpu"], ["--batch 1000000000000", "of memory"]),
    ("certify-corruptions batch 1e12", ["certify-corruptions", "{cifar}", "0.25", "{out}", *FAST, "--batch",
                                        "1000000000000", "--data-dir", "{data}/c10c_labels_99"],
     ["--batch 1000000000000", "of memory"]),
    ("compare certify-batch 1e12", [*COMPARE, "--certify-batch", "1000000000000", "--output", "{out}"],
     ["--certify-batch 1000000000000", "of memory"]),
    ("lr 1e308", [*TRAIN, "--checkpoint", "{out}.pt", "--lr", "1e308"], ["--lr must lie in [0, 3.40282e+38]"]),
    ("compare lr 1e308", [*COMPARE, "--lr", "1e308", "--output", "{out}"], ["--lr must lie in [0, 3.40282e+38]"]),
    ("device meta", ["certify", "digits", "{digits}", "0.25", "{out}.tsv", *FAST, "--device", "meta"],
     ["--device must be auto, cpu, cuda, cuda:N or mps, got 'meta'"]),
    ("arch lenet on digits", [*TRAIN, "--checkpoint", "{out}.pt", "--arch", "lenet"],
     ["--arch lenet (dataset digits) cannot take inputs of shape (1, 8, 8)"]),
    ("compare arch lenet on digits", [*COMPARE, "--arch", "lenet", "--output", "{out}"],
     ["--arch lenet (dataset digits) cannot take inputs of shape (1, 8, 8)"]),
    ("imagenet image beyond the pixel limit", ["certify", "imagenet", "{imagenet}", "0.25", "{out}.tsv", *FAST,
                                               "--data-dir", "{data}/imagenet"],
     ["ImageNet image", "big.JPEG", "DecompressionBombError", "exceeds limit"]),
    ("split test5000 without robustbench", ["certify", "imagenet", "{imagenet}", "0.25", "{out}.tsv", *FAST,
                                            "--split", "test5000", "--data-dir", "{data}/imagenet"],
     ["--split 'test5000': a missing optional package: robustbench could not be imported", "pip install"]),
    ("compare slurm without slurm", [*COMPARE, "--slurm", "--output", "{out}"],
     ["--slurm: "]),
    ("checkpoint of other shapes", ["certify", "digits", "{wide}", "0.25", "{out}.tsv", *FAST],
     ["base_classifier", "size mismatch of [1.0.weight (16, 3, 3, 3) (architecture: (16, 1, 3, 3))]"]),
    ("resumed checkpoint without epoch", [*TRAIN, "--checkpoint", "{copy:no_epoch}"],
     ["no_epoch.pt", "'epoch' must be the number of finished epochs", "got None"]),
    ("resumed checkpoint with a bad rng_state", [*TRAIN, "--checkpoint", "{copy:bad_rng}"],
     ["bad_rng.pt", "'rng_state' is not a state of torch's generator"]),
    ("resumed checkpoint with a bad momentum", [*TRAIN, "--checkpoint", "{copy:bad_momentum}"],
     ["bad_momentum.pt", "optimizer state 'momentum_buffer' of parameter 0 is a float32 tensor of shape (3,)"]),
    ("teacher of another dataset", ["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25",
                                    "--checkpoint", "{out}.pt", "--teacher", "{cifar}"],
     ["--teacher", "trained on cifar10", "does not fit dataset digits"]),
    # 3. Hangs.
    ("certify outfile FIFO", ["certify", "digits", "{digits}", "0.25", "{fifo}", *FAST],
     ["outfile", "is not a regular file"]),
    ("smooth-predict outfile FIFO", ["smooth-predict", "digits", "{digits}", "{fifo}", "--device", "cpu"],
     ["outfile", "is not a regular file"]),
    ("train checkpoint FIFO", [*TRAIN, "--checkpoint", "{fifo}"], ["--checkpoint", "is not a regular file"]),
    # 4. Checks too late or blaming the wrong thing.
    ("compare lr -1", [*COMPARE, "--lr", "-1", "--output", "{out}"], ["--lr must be a finite number >= 0, got -1"]),
    ("compare lr nan", [*COMPARE, "--lr", "nan", "--output", "{out}"], ["--lr must be a finite number >= 0, got nan"]),
    ("demo N0 0", ["demo", "--output", "{out}", "--N0", "0"], ["--N0 must be an integer >= 1, got 0"]),
    ("demo N 0", ["demo", "--output", "{out}", "--N", "0"], ["--N must be an integer >= 1, got 0"]),
    ("demo alpha 2", ["demo", "--output", "{out}", "--alpha", "2"], ["--alpha must lie in the open interval (0, 1)"]),
    ("seed -1", ["certify", "digits", "{digits}", "0.25", "{out}.tsv", *FAST, "--seed", "-1"],
     ["--seed must be an integer in [0, 9223372036854775807], got -1"]),
    ("device mps", ["certify", "digits", "{digits}", "0.25", "{out}.tsv", *FAST, "--device", "mps"],
     ["--device mps: the MPS backend is not available"]),
]


@pytest.mark.parametrize("case,argv,fragments", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, argv, fragments, files, tmp_path, capsys,
                                                         monkeypatch, tiny_model):
    if case == "device mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if "{fifo}" in argv and not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64x64 image is beyond twice the limit
    for module in ("robustbench", "robustbench.data"):  # not installed (import fails), wherever this runs
        monkeypatch.setitem(sys.modules, module, None)
    if "--slurm" in argv:
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no Slurm commands on the PATH
    work = tmp_path / "work"
    work.mkdir()
    names = {name: str(value) for name, value in vars(files).items()} | {"data": str(files.root),
                                                                         "out": str(work / "out")}
    command = []
    for part in argv:
        if part == "{fifo}":
            os.mkfifo(work / "fifo")
            part = str(work / "fifo")
        elif part.startswith("{copy:"):
            name = part[len("{copy:"):-1]
            part = str(shutil.copy(getattr(files, name), work / f"{name}.pt"))
        command.append(part.format(**names))
    before = _snapshot(work)
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith(f"catrs {command[0]}: error: "), error
    for fragment in fragments:
        assert fragment in error, error
    assert _snapshot(work) == before, "the refused command wrote or changed files"


def test_full_disk_during_a_checkpoint_write(files, tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("catrs_plugin.utils.atomic.os.fsync", full)
    checkpoint = tmp_path / "c.pt"
    assert main([*TRAIN, "--epochs", "1", "--checkpoint", str(checkpoint)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert f"--checkpoint {str(checkpoint)!r}: cannot write the output: [Errno 28] No space left on device" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no checkpoint, no temporary file, no lock file"


@pytest.mark.parametrize("failure,fragment", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 8000000000000 bytes"), "--batch 1000: not enough memory ("),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "--batch 1000: not enough memory"),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "--device 'cpu': the device failed"),
    (OSError(errno.ENOSPC, "No space left on device"), "outfile '{out}': cannot write the output"),
    (RuntimeError("Error(s) in loading state_dict for Sequential:\n\tsize mismatch for 1.0.weight"),
     "base_classifier '{ckpt}': a file is damaged or of another kind: Error(s) in loading state_dict"),
    (ModuleNotFoundError("No module named 'robustbench'", name="robustbench"),
     "--split 'test': a missing optional package: No module named 'robustbench'"),
])
def test_the_last_resort_names_the_argument(files, tmp_path, capsys, monkeypatch, failure, fragment):
    """Failures only the system can tell, raised where certification starts: one line, exit 2; --debug adds
    the traceback; any other exception is a bug and keeps its traceback."""
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr("catrs_plugin.certify.files.certify_to_file", fail)
    out = tmp_path / "o.tsv"
    command = ["certify", "digits", str(files.digits), "0.25", str(out), *FAST, "--batch", "1000"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert fragment.format(out=out, ckpt=files.digits) in error, error
    assert main([*command, "--debug"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("Traceback") and error.rstrip().splitlines()[-1].startswith("catrs certify: error: ")

    monkeypatch.setattr("catrs_plugin.certify.files.certify_to_file", lambda *a, **k: {}["a bug"])
    with pytest.raises(KeyError):
        main(command)


def test_certify_on_cpu_0_is_the_cpu(files, tmp_path, capsys):
    assert main(["certify", "digits", str(files.digits), "0.25", str(tmp_path / "o.tsv"), *FAST, "--device",
                 "cpu:0"]) == 0
    assert len((tmp_path / "o.tsv").read_text().splitlines()) == 3


def test_analyze_json_is_json(tmp_path, capsys):
    """No NaN or Infinity in ``--format json``: a strict parser reads it."""
    import json

    path = tmp_path / "r.tsv"
    path.write_text("\t".join(CERTIFY_HEADER) + "\n0\t1\t-1\t0.0\t0\t0:00:01\n1\t2\t2\t0.5\t1\t0:00:02\n")
    assert main(["analyze", str(path), "--format", "json"]) == 0

    def refuse(name):
        raise AssertionError(f"{name} in the JSON output")

    summaries = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert summaries[0]["n"] == 2 and summaries[0]["acr"] == pytest.approx(0.25)


def test_a_run_that_fails_on_a_worker_process_is_one_line(files, tmp_path, capsys):
    """``compare --runs-per-device 2``: a run's failure comes back from its worker process (a refusal of a
    checkpoint of another run, which must survive pickling) as one line; the other run finishes."""
    out = tmp_path / "cmp"
    foreign = out / "noise_0.25" / "checkpoints" / "stability.pt"
    foreign.parent.mkdir(parents=True)
    shutil.copy(files.trained, foreign)
    assert main([*COMPARE[:6], "gaussian,stability", *COMPARE[7:], "--N", "20", "--max", "4", "--runs-per-device", "2",
                 "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert "1 run(s) failed (stability at sigma 0.25: ProvenanceError: checkpoint" in error, error
    assert "was produced with other settings" in error and "rerun the same command to resume" in error, error
    assert len((out / "noise_0.25" / "certify" / "gaussian.tsv").read_text().splitlines()) == 3
