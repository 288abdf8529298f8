"""Nothing lost: real ``catrs`` subprocesses killed with SIGKILL mid-run, then restarted.

Each kill point is deterministic in what it waits for: the test polls the run's own output
(rows of the certification file, the epoch stored in the training checkpoint) and sends
SIGKILL once the run has made that much progress, then checks that the process was still
running (it died of the signal, not of finishing). The restarted run must end exactly where
an uninterrupted run ends: the same rows apart from ``time``, the same weights, optimizer
(learning rate included) and random state. Every run is a subprocess with one thread, so that all runs
compute bit for bit alike and a test never oversubscribes the cores.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from catrs_plugin.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CERTIFY = ["--N0", "100", "--N", "5000", "--batch", "1000", "--skip", "2", "--max", "120", "--seed", "7",
           "--device", "cpu", "--quiet"]
SELECTED = 60  # examples 0, 2, ..., 118
TRAIN_EPOCHS = 6


def catrs(*args):
    return [sys.executable, "-m", "catrs_plugin.cli", *map(str, args)]


def kill_when(command, reached, timeout=60.0):
    """Start ``command``, SIGKILL it as soon as ``reached()`` holds, and check it died of the signal."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            if process.poll() is not None:
                pytest.fail(f"the run ended before the kill point: {process.stdout.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not reach the kill point in time")
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, "the run finished before SIGKILL reached it"


def complete(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def rows(path):
    """The rows of a result file without the ``time`` column (an incomplete last line is kept as is)."""
    return [line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "gaussian.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "64", "--checkpoint", str(path), "--quiet", "--device", "cpu"]) == 0
    return path


def test_killed_certification_resumes_to_the_same_rows(model, tmp_path):
    whole, killed = tmp_path / "whole.tsv", tmp_path / "killed.tsv"
    complete(catrs("certify", "digits", model, 0.25, whole, *CERTIFY))
    expected = rows(whole)
    assert len(expected) == SELECTED + 1

    kill_when(catrs("certify", "digits", model, 0.25, killed, *CERTIFY),
              lambda: killed.exists() and len(rows(killed)) > 5)
    partial = rows(killed)
    assert 5 < len(partial) < len(expected)
    assert partial[:-1] == expected[: len(partial) - 1]  # every complete row is already final
    with open(killed, "a") as handle:
        handle.write(f"{(len(partial) - 1) * 2}\t3\t")  # also a torn last row, as a crash mid-write leaves it

    output = complete(catrs("certify", "digits", model, 0.25, killed, *CERTIFY))
    assert rows(killed) == expected
    done_before = int(output.split("(")[1].split()[0])
    assert len(partial) - 2 <= done_before <= len(partial) - 1


TRAIN = ["--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--hp", "num_steps=1",
         "--epochs", str(TRAIN_EPOCHS), "--batch", "64", "--lr-step-size", "2", "--gamma", "0.5",
         "--seed", "3", "--quiet", "--device", "cpu"]


def _epoch(path):
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def test_killed_training_resumes_to_the_same_weights(digits, tmp_path):
    soft = tmp_path / "soft.npy"
    np.save(soft, np.random.default_rng(0).dirichlet(np.ones(10), size=len(digits[0])).astype(np.float32))
    whole, killed = tmp_path / "whole.pt", tmp_path / "killed.pt"
    complete(catrs("train", *TRAIN, "--soft-labels", soft, "--checkpoint", whole))

    kill_when(catrs("train", *TRAIN, "--soft-labels", soft, "--checkpoint", killed), lambda: _epoch(killed) >= 2)
    stopped_at = _epoch(killed)
    assert 2 <= stopped_at < TRAIN_EPOCHS
    complete(catrs("train", *TRAIN, "--soft-labels", soft, "--checkpoint", killed))

    expected, resumed = (torch.load(path, weights_only=True) for path in (whole, killed))
    assert resumed["epoch"] == TRAIN_EPOCHS
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    momentum = [state["momentum_buffer"] for state in expected["optimizer"]["state"].values()]
    assert len(momentum) == len(expected["state_dict"])
    for slot, state in expected["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][slot]["momentum_buffer"], state["momentum_buffer"])
    assert resumed["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    # The last epoch (0-based 5) ran at the reference's closed form 0.1 * 0.5 ** ((5 - 1) // 2).
    assert expected["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.5 ** ((TRAIN_EPOCHS - 2) // 2))
    assert torch.equal(resumed["rng_state"], expected["rng_state"])
    without_time = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert without_time(resumed["history"]) == without_time(expected["history"])
