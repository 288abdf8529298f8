"""Readers that check contents, not only shapes: tampered checkpoints and result files, a damaged soft-label
run, gzip bombs, a model with NaN weights, impossible ART settings, leftovers of killed writes.

The fuzz tests change one entry of a valid file at a time (seeded) and require either a correct
read or one clean ``ValueError`` naming the file, on one line; never another exception, and
never numbers from an impossible file.
"""

from __future__ import annotations

import copy
import gzip
import math
import os
import struct
import time

import numpy as np
import pytest
import torch
from torch import nn

from catrs_adapters.art.estimator import PyTorchCATRS
from catrs_adapters.data.mnist import read_idx
from catrs_plugin.certify.files import certify_to_file
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.tsv import CERTIFY_HEADER, PREDICT_HEADER, ResultWriter, read_table
from catrs_plugin.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, TrainingDiverged, train
from catrs_plugin.train.soft_labels import soft_labels_to_file
from catrs_plugin.utils import provenance
from catrs_plugin.utils.atomic import STALE_SECONDS, atomic_writer, remove_stale_temporaries, write_atomic

DELETE = object()
REPLACEMENTS = [DELETE, [], None, "garbage", -3, 2.5, float("nan"), True, {}, 10**30, torch.zeros(3),
                torch.zeros(2, 2, dtype=torch.int64), torch.full((5,), float("nan"))]


#: Entries whose items are all of one kind: only the first is tampered with (the provenance record not at all:
#: any change of it is a refusal, tests/test_provenance.py).
UNIFORM = ("state_dict", "state")


def _paths(value, prefix=()):
    """The entries of a nested payload as key paths: every entry of a record, the first of a list or table."""
    if prefix:
        yield prefix
    if prefix[-1:] == ("provenance",):
        return
    if isinstance(value, dict):
        items = list(value.items())[:1] if prefix[-1:] and prefix[-1] in UNIFORM else value.items()
        for key, entry in items:
            yield from _paths(entry, (*prefix, key))
    elif isinstance(value, list) and value:
        yield from _paths(value[0], (*prefix, 0))


def _tampered(payload, path, replacement):
    changed = copy.deepcopy(payload)
    *parents, last = path
    holder = changed
    for key in parents:
        holder = holder[key]
    if replacement is DELETE:
        del holder[last]
    else:
        holder[last] = replacement
    return changed


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A one-epoch training checkpoint of 64 digits (one optimizer step per epoch) and its data."""
    x, y = digits[0][:64], digits[1][:64]
    path = tmp_path_factory.mktemp("fuzz") / "trained.pt"
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    train(model, get_registry().method("gaussian"), {}, 0.25, TensorData(x, y),
          TrainConfig(epochs=1, batch_size=64, checkpoint=str(path), progress=False),
          checkpoint_fields={"arch": "digits_cnn", "dataset": "digits"})
    return path, x, y


def _resume(path, x, y):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    return train(model, get_registry().method("gaussian"), {}, 0.25, TensorData(x, y),
                 TrainConfig(epochs=2, batch_size=64, checkpoint=str(path), progress=False),
                 checkpoint_fields={"arch": "digits_cnn", "dataset": "digits"})


def test_tampered_checkpoints_load_or_fail_cleanly(trained, tmp_path):
    """Every entry of a training checkpoint replaced (seeded choice of replacements) or removed: loading it
    for certification and resuming training from it either works or raises one clean ValueError."""
    source, x, y = trained
    payload = read_checkpoint(source)
    rng = np.random.default_rng(24)
    others = REPLACEMENTS[2:]  # always removed and replaced by something unhashable, then two seeded choices
    cases = [(path, replacement) for path in _paths(payload)
             for replacement in [DELETE, [], *(others[i] for i in rng.choice(len(others), 2, replace=False))]]
    problems, refused = [], 0
    for number, (path, replacement) in enumerate(cases):
        target = tmp_path / f"tampered_{number}.pt"
        save_checkpoint(target, _tampered(payload, path, replacement))
        for name, action in (("load", lambda: load_checkpoint(target, dataset="digits")),
                             ("resume", lambda: _resume(target, x, y))):
            try:
                action()
            except TrainingDiverged:
                continue  # a tampered momentum or learning rate may drive the loss to NaN: refused by the loop
            except ValueError as error:
                refused += 1
                if target.name not in str(error) or "\n" in str(error):
                    problems.append(f"{name} {path} = {replacement!r}: unclear message: {error}")
            except Exception as error:  # noqa: BLE001 - the point of the test
                problems.append(f"{name} {path} = {replacement!r}: {type(error).__name__}: {error}")
    assert not problems, "\n".join(problems[:15])
    assert refused > len(cases) // 2, "most tampering must be caught"


def test_a_checkpoint_of_nan_weights_is_not_loaded(trained, tmp_path):
    payload = read_checkpoint(trained[0])
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", payload)
    with pytest.raises(ValueError, match=rf"NaN or infinite values in \[{key}\]"):
        load_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="NaN or infinite values"):
        _resume(tmp_path / "nan.pt", *trained[1:])


class Constant(nn.Module):
    """Logits that are the same for every input: ``value`` in class ``cls``, 0 elsewhere."""

    def __init__(self, value: float, cls: int = 1) -> None:
        super().__init__()
        self.value, self.cls = value, cls
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.zeros(len(x), 3, device=x.device) + self.anchor
        logits[:, self.cls] = self.value
        return logits


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_are_no_votes(value, tmp_path):
    x = np.zeros((4, 1, 2, 2), np.float32)
    smooth = Smooth(Constant(value), 3, 0.25, batch_size=64)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        smooth.certify(x, 10, 100, 0.001)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        certify_to_file(Constant(value), 3, 0.25, x, np.zeros(4, np.int64), tmp_path / "o.tsv", n0=10, n=100,
                        progress=False)
    assert not list(tmp_path.iterdir()), "nothing written: the file starts with its first row"
    assert (Smooth(Constant(5.0), 3, 0.25).certify(x, 10, 100, 0.001)[0] == 1).all()  # finite logits count


def _valid_tsv(header):
    rng = np.random.default_rng(1)
    lines = ["\t".join(header)]
    for i in range(20):
        label, predict = int(rng.integers(0, 10)), int(rng.choice([-1, *range(10)]))
        radius = 0.0 if predict == -1 else round(float(rng.uniform(0, 2)), 3)
        cells = [i, label, predict, *([radius] if "radius" in header else []), int(predict == label), "0:00:01.5"]
        lines.append("\t".join(map(str, cells)))
    return lines


FIELD_VALUES = ["", "nan", "inf", "-inf", "-1", "-2", "7", "1e400", "0.5", "abc", "99999999999999999999", "0", "1"]


@pytest.mark.parametrize("header", [CERTIFY_HEADER, PREDICT_HEADER], ids=["certify", "predict"])
def test_tampered_result_files_read_only_possible_rows(header, tmp_path):
    lines = _valid_tsv(header)
    rng = np.random.default_rng(len(header))
    settings = {"model": "m"}
    problems, refused, cases = [], 0, 0
    for number in range(300):
        rows = [line.split("\t") for line in lines]
        kind = number % 3
        row = int(rng.integers(1, len(rows)))
        if kind == 0:  # one field changed
            rows[row][int(rng.integers(0, len(header)))] = str(rng.choice(FIELD_VALUES))
        elif kind == 1:  # a row repeated (two writers appending the same example)
            rows.insert(int(rng.integers(1, len(rows) + 1)), list(rows[row]))
        else:  # a field lost or one too many
            rows[row] = rows[row][:-1] if rng.random() < 0.5 else [*rows[row], "1"]
        path = tmp_path / f"t{number}.tsv"
        path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
        provenance.write_record(path, settings)
        for name, read in (("read", lambda: read_table(path, (header,))),
                           ("resume", lambda: ResultWriter(path, settings, header).close())):
            cases += 1
            try:
                table = read()
            except ValueError as error:
                refused += 1
                if f"{path.name}:" not in str(error) or "\n" in str(error):
                    problems.append(f"{name}: unclear message: {error}")
                continue
            except Exception as error:  # noqa: BLE001 - the point of the test
                problems.append(f"{name}: {type(error).__name__}: {error}")
                continue
            if table is None:
                continue
            values = [dict(zip(header, v)) for v in table.values]
            if len({v["idx"] for v in values}) != len(values):
                problems.append(f"{name}: duplicate rows read from {path.name}")
            for v in values:
                if v["correct"] != int(v["predict"] == v["label"]) or v["idx"] < 0 or v["label"] < 0 or (
                        "radius" in v and not (math.isfinite(v["radius"]) and v["radius"] >= 0)):
                    problems.append(f"{name}: impossible row read from {path.name}: {v}")
    assert not problems, "\n".join(problems[:15])
    assert refused > cases // 2


def test_damaged_unfinished_soft_labels_are_not_resumed(digits_checkpoint, digits, tmp_path, monkeypatch):
    model = load_checkpoint(digits_checkpoint)
    x = digits[0][:20]
    out = tmp_path / "soft.npy"
    kwargs = dict(n=50, batch_size=500, progress=False)
    original, calls = Smooth.class_frequencies, []

    def interrupted_after_one_group(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Smooth, "class_frequencies", interrupted_after_one_group)
        with pytest.raises(KeyboardInterrupt):
            soft_labels_to_file(model, x, 10, 0.25, out, **kwargs)
    partial = tmp_path / "soft.npy.partial"
    assert partial.stat().st_size == 10 * 10 * 4  # one group of 10 rows finished
    with open(partial, "ab") as handle:  # another writer's bytes, out of step with the rows
        handle.write(b"\x00\x01" + np.full(10, 0.1, np.float32).tobytes())
    with pytest.raises(ValueError, match=r"unfinished soft labels .*soft.npy.partial.*: row 10 is not the class"):
        soft_labels_to_file(model, x, 10, 0.25, out, **kwargs)
    assert soft_labels_to_file(model, x, 10, 0.25, out, resume=False, **kwargs) == 20


def _bomb(path, declared_images: int, body: bytes, forge_trailer: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", declared_images, 28, 28)
    data = bytearray(gzip.compress(header + body))
    if forge_trailer:  # the trailer claims the declared size: only the bounded read can tell
        data[-4:] = (len(header) + declared_images * 28 * 28).to_bytes(4, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("forge_trailer", [False, True])
def test_a_gzip_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch, forge_trailer):
    decompressed = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, size=-1: decompressed.append(
        len(result := real_read(self, size))) or result)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _bomb(path, 2, bytes(20_000_000), forge_trailer)
    message = "declares 1568 bytes but the file holds more" if forge_trailer else "the gzip trailer records 20000016"
    with pytest.raises(ValueError, match=message):
        read_idx(path)
    assert sum(decompressed) <= 16 + 2 * 28 * 28 + 1, "never more than the declared size and one byte"
    _bomb(path, 2, bytes(2 * 28 * 28), False)
    assert read_idx(path).shape == (2, 28, 28)


def test_art_estimator_refuses_impossible_settings():
    model = get_registry().create_model("digits_cnn", "digits")
    make = lambda **kw: PyTorchCATRS(model, nn.CrossEntropyLoss(), (1, 8, 8), kw.pop("nb_classes", 10),  # noqa: E731
                                     device_type="cpu", sample_size=8, scale=0.25, **kw)
    with pytest.raises(ValueError, match="clip_values must not hold NaN"):
        make(clip_values=(float("nan"), 1.0))
    with pytest.raises(ValueError, match="clip_values must not hold NaN"):
        make(clip_values=(np.zeros((1, 8, 8)), np.full((1, 8, 8), np.nan)))
    with pytest.raises(ValueError, match="clip_values must have min < max"):
        make(clip_values=(1.0, 0.0))
    with pytest.raises(ValueError, match="channels_first=False is not supported"):
        make(channels_first=False, clip_values=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"nb_classes=5\) returns outputs of shape \(10,\) per input, expected 5"):
        make(nb_classes=5, clip_values=(0.0, 1.0))  # its gradients would be of the wrong classes, without a sign
    with pytest.raises(ValueError, match=r"input_shape=\(1, 4, 4\).* cannot take inputs of shape \(1, 4, 4\)"):
        PyTorchCATRS(model, nn.CrossEntropyLoss(), (1, 4, 4), 10, device_type="cpu", sample_size=8, scale=0.25)
    x, y = np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1])
    assert make(clip_values=(0.0, 1.0)).loss_gradient(x, y).shape == x.shape


def test_a_killed_writes_leftover_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "m.pt"
    write_atomic(target, b"first")
    stale = tmp_path / ".m.pt.0123456789ab.tmp"  # what kill -9 during a write leaves
    stale.write_bytes(b"half a checkpoint")
    fresh = tmp_path / ".m.pt.ba9876543210.tmp"  # a write that may still be going on
    fresh.write_bytes(b"being written")
    other = tmp_path / ".other.pt.0123456789ab.tmp"  # another file's
    other.write_bytes(b"x")
    old = time.time() - 2 * STALE_SECONDS
    for path in (stale, other):
        os.utime(path, (old, old))
    with atomic_writer(target) as stream:  # a writer in progress holds its temporary's lock
        stream.write(b"second")
        (writing,) = [p for p in tmp_path.glob(".m.pt.*.tmp") if p not in (stale, fresh)]
        os.utime(writing, (old, old))
        assert remove_stale_temporaries(target) == [], "neither a locked nor a fresh temporary is stale"
    assert target.read_bytes() == b"second"
    assert not stale.exists() and fresh.exists() and other.exists()
