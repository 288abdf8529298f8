"""Two writers on one output: the second is refused and names the first; the first's results equal a
lone run's.

The first writer runs ``catrs`` in a thread of this process and is held, deterministically, in
the middle of its work (after its first rows, its first epoch, its first certification) while
the second starts: as a real ``catrs`` process for ``certify``, in this process for the others
(the lock is exclusive between threads as between processes, see tests/test_locking.py). Then
the first finishes and its output is compared with that of a run that was alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.cli import main
from catrs_plugin.compare import run as comparison
from catrs_plugin.results.tsv import ResultWriter
from catrs_plugin.train import loop

CERTIFY = ["--N0", "20", "--N", "100", "--batch", "300", "--max", "12", "--quiet", "--device", "cpu"]


class Gate:
    """Wrap ``owner.name`` so that the first writer's thread stops after its ``after``-th call until opened."""

    def __init__(self, monkeypatch, owner, name: str, after: int = 1) -> None:
        real = getattr(owner, name)
        self.reached, self.opened, self.calls, self.thread = threading.Event(), threading.Event(), 0, None

        def gated(*args, **kwargs):
            result = real(*args, **kwargs)
            if threading.current_thread() is self.thread:
                self.calls += 1
                if self.calls == after:
                    self._wait()
            return result

        monkeypatch.setattr(owner, name, gated)

    def _wait(self) -> None:
        self.reached.set()
        assert self.opened.wait(timeout=600), "the test never let the first writer go on"

    def run_first(self, argv: list[str]) -> dict:
        outcome = {}
        self.thread = threading.Thread(target=lambda: outcome.setdefault("code", main(argv)), daemon=True)
        self.thread.start()
        assert self.reached.wait(timeout=300), "the first writer never reached the gate"
        return outcome

    def finish(self, outcome: dict) -> int:
        self.opened.set()
        self.thread.join(timeout=300)
        return outcome["code"]


def _refused(code: int, error: str, what: str) -> None:
    assert code == 2, error
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert f"{what}" in error and f"is being written by pid {os.getpid()} on host" in error, error


def _rows(path):
    return [line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()]


def test_two_certify_runs_on_one_file(digits_checkpoint, tmp_path, capsys, monkeypatch):
    out, alone = tmp_path / "c.tsv", tmp_path / "alone.tsv"
    gate = Gate(monkeypatch, ResultWriter, "write", after=3)
    first = gate.run_first(["certify", "digits", str(digits_checkpoint), "0.25", str(out), *CERTIFY])
    written = out.read_bytes()
    second = subprocess.run([sys.executable, "-m", "catrs_plugin.cli", "certify", "digits", str(digits_checkpoint),
                             "0.25", str(out), *CERTIFY], capture_output=True, text=True, timeout=300)
    _refused(second.returncode, second.stderr, f"result file {str(out)!r}")
    assert f"command: {' '.join(sys.argv)}" in second.stderr  # this process's command line
    assert out.read_bytes() == written, "the refused run changed the file"
    assert gate.finish(first) == 0
    assert main(["certify", "digits", str(digits_checkpoint), "0.25", str(alone), *CERTIFY]) == 0
    assert _rows(out) == _rows(alone) and len(_rows(out)) == 13
    assert not (tmp_path / "c.tsv.lock").exists()


def test_two_smooth_predict_runs_on_one_file(digits_checkpoint, tmp_path, capsys, monkeypatch):
    out, alone = tmp_path / "soft.npy", tmp_path / "alone.npy"
    command = ["smooth-predict", "digits", str(digits_checkpoint), "--N", "50", "--batch", "500", "--quiet",
               "--device", "cpu"]
    gate = Gate(monkeypatch, Smooth, "class_frequencies", after=2)
    first = gate.run_first([*command[:3], str(out), *command[3:]])
    partial = (tmp_path / "soft.npy.partial").read_bytes()
    capsys.readouterr()
    for extra in ([], ["--restart"]):  # a restart would have removed the unfinished rows
        _refused(main([*command[:3], str(out), *command[3:], *extra]), capsys.readouterr().err,
                 f"soft labels {str(out)!r}")
    assert (tmp_path / "soft.npy.partial").read_bytes() == partial
    assert gate.finish(first) == 0
    assert main([*command[:3], str(alone), *command[3:]]) == 0
    assert np.array_equal(np.load(out), np.load(alone)) and np.load(out).shape == (1438, 10)


def test_two_train_runs_on_one_checkpoint(tmp_path, capsys, monkeypatch):
    out, alone = tmp_path / "m.pt", tmp_path / "alone.pt"
    command = ["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2", "--batch",
               "128", "--quiet", "--device", "cpu", "--checkpoint"]
    gate = Gate(monkeypatch, loop, "save_checkpoint", after=1)
    first = gate.run_first([*command, str(out)])
    saved = out.read_bytes()
    capsys.readouterr()
    for extra in ([], ["--restart"]):  # --restart would have removed the first's checkpoint
        _refused(main([*command, str(out), *extra]), capsys.readouterr().err, f"--checkpoint {str(out)!r}")
    assert out.read_bytes() == saved
    assert gate.finish(first) == 0
    assert main([*command, str(alone)]) == 0
    trained, lone = (torch.load(path, weights_only=True) for path in (out, alone))
    assert trained["epoch"] == lone["epoch"] == 2
    for key, tensor in lone["state_dict"].items():
        assert torch.equal(trained["state_dict"][key], tensor), key


def test_two_comparisons_in_one_folder(tmp_path, capsys, monkeypatch):
    out, alone = tmp_path / "cmp", tmp_path / "alone"
    command = ["compare", "--dataset", "digits", "--sigma", "0.25", "--methods", "gaussian,stability", "--epochs", "1",
               "--N", "50", "--max", "6", "--quiet", "--device", "cpu", "--certify-collapsed", "--output"]
    gate = Gate(monkeypatch, comparison, "certify_to_file", after=1)
    first = gate.run_first([*command, str(out)])
    capsys.readouterr()
    before = sorted(str(p) for p in out.rglob("*"))
    _refused(main([*command, str(out)]), capsys.readouterr().err, f"comparison folder {str(out)!r}")
    assert sorted(str(p) for p in out.rglob("*")) == before
    assert gate.finish(first) == 0
    assert main([*command, str(alone)]) == 0
    for method in ("gaussian", "stability"):
        assert _rows(out / "noise_0.25" / "certify" / f"{method}.tsv") == \
            _rows(alone / "noise_0.25" / "certify" / f"{method}.tsv")


@pytest.mark.parametrize("content", [b"", b'{"pid": 999999999, "host": "elsewhere"}\n'])
def test_a_lock_file_left_by_a_killed_run_is_taken_over(digits_checkpoint, tmp_path, capsys, content):
    out = tmp_path / "c.tsv"
    (tmp_path / "c.tsv.lock").write_bytes(content)  # what kill -9 leaves: a file nobody holds a lock on
    assert main(["certify", "digits", str(digits_checkpoint), "0.25", str(out), *CERTIFY]) == 0
    assert len(_rows(out)) == 13 and not (tmp_path / "c.tsv.lock").exists()
