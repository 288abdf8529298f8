"""A collapsed run is recognised and reported, never tabulated as a result; MACER's optimiser presets."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from catrs_plugin.compare import BUDGETS, Budget, parse_methods, run_comparison
from catrs_plugin.compare.collapse import diagnose, loss_problem, prediction_problem
from catrs_plugin.compare.plan import plan_run
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, TrainingDiverged, train


def history(*losses):
    return [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(losses)]


def test_loss_problems():
    assert loss_problem(history(2.3, 1.1, 0.6)) is None
    assert loss_problem(history(2.3, 3.0, 2.0)) is None  # a rise within the factor is not a collapse
    assert "epoch 2 is nan" in loss_problem(history(2.3, float("nan"), 0.5))
    assert "diverged: 2.6 in epoch 1, 20.5 in epoch 3" in loss_problem(history(2.6, 9.0, 20.5))


def test_one_class_predictions():
    labels = np.arange(100) % 10
    assert prediction_problem(labels, labels) is None
    mostly_three = np.where(np.arange(100) < 5, 1, 3)
    assert "class 3 for 95.0 % of the noisy test inputs (the most frequent label has 10.0 %)" in prediction_problem(
        mostly_three, labels)
    assert prediction_problem(np.where(np.arange(100) < 11, 1, 3), labels) is None  # 89 %: below the threshold
    assert prediction_problem(np.full(100, 3), np.full(100, 3)) is None  # every label is that class: no collapse


class Constant(nn.Module):
    def __init__(self, winner):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))
        with torch.no_grad():
            self.bias[winner] = 100.0

    def forward(self, x):
        return self.bias.expand(len(x), 10)


def test_diagnose_a_model_that_predicts_one_class(digits):
    reason = diagnose(history(2.3, 1.0), Constant(7), digits[2][:100], digits[3][:100], 0.25, seed=0)
    assert reason.startswith("it predicts class 7 for 100.0 % of the noisy test inputs")


def test_non_finite_loss_stops_training_and_keeps_the_last_finite_checkpoint(digits, tmp_path):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    path = tmp_path / "run.pt"
    config = TrainConfig(epochs=20, batch_size=64, lr=1e6, seed=0, checkpoint=str(path), progress=False)
    with pytest.raises(TrainingDiverged, match=r"mean training loss of epoch \d+ is (nan|inf).*learning rate \(it was 1e\+06\)"):
        train(model, get_registry().method("gaussian"), {}, 0.25, TensorData(digits[0][:256], digits[1][:256]), config)
    if path.exists():  # the epochs before the failing one were finite and saved
        assert all(np.isfinite(h["loss"]) for h in read_checkpoint(path)["history"])


def test_comparison_reports_a_collapsed_run_instead_of_numbers(tmp_path):
    budget = Budget(epochs=2, batch_size=64, lr=1e6, lr_step_size=5, soft_samples=10, n0=20, n=100, alpha=0.01,
                    max_examples=20, train_examples=256)
    lines = []
    (comparison,) = run_comparison("digits", parse_methods("gaussian", get_registry()), 0.5, tmp_path, "quick", budget,
                                   log=lines.append)
    (outcome,) = comparison.outcomes
    assert "mean training loss of epoch" in outcome.collapsed and outcome.rows_certified == 0
    assert any(line.startswith("WARNING: gaussian at sigma 0.5 collapsed") for line in lines)
    assert not (comparison.directory / "certify" / "gaussian.tsv").exists()
    markdown = (comparison.directory / "summary.md").read_text()
    assert "| gaussian | - | collapsed |" in markdown and "gaussian at sigma = 0.5 collapsed" in markdown
    summary = json.loads((comparison.directory / "summary.json").read_text())["methods"][0]
    assert summary["acr"] is None and summary["collapsed"] == outcome.collapsed
    assert "collapsed" in (tmp_path / "summary.md").read_text()


def test_macer_presets_carry_their_own_optimiser_settings():
    macer = get_registry().method("macer")
    quick = plan_run(macer, 0.25, "quick", BUDGETS["quick"])
    assert quick.train == {"epochs": 40, "batch_size": 256, "lr": 0.01, "lr_step_size": 13}
    pinned = plan_run(macer, 0.25, "quick", Budget(**{**BUDGETS["quick"].__dict__, "lr": 0.1, "pinned": ("lr",)}))
    assert pinned.train["lr"] == 0.1  # a learning rate given on the command line wins
    paper = plan_run(macer, 0.5, "paper", BUDGETS["paper"])
    assert paper.hyperparameters["lbd"] == 6.0 and paper.train == {"epochs": 150, "batch_size": 256, "lr": 0.1,
                                                                    "lr_step_size": 50}
    original = plan_run(macer, 0.5, "original", BUDGETS["paper"])
    assert original.train == {"epochs": 440, "batch_size": 64, "lr": 0.01, "lr_step_size": 50, "weight_decay": 5e-4,
                              "lr_milestones": (199, 399)}
    assert original.hyperparameters["lbd"] == 12.0 and original.hyperparameters["num_chunks"] == 1
