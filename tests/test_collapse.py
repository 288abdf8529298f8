"""A collapsed run is recognised from what its model does and reported, never tabulated as a result unless asked;
MACER's optimiser presets."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from catrs_plugin.cli import main
from catrs_plugin.compare import BUDGETS, Budget, parse_methods, run_comparison
from catrs_plugin.compare.collapse import MIN_SKILL, behaviour, check_indices, check_model
from catrs_plugin.compare.plan import plan_run
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, TrainingDiverged, train


def test_behaviour_is_judged_against_a_constant_answer():
    labels = np.arange(100) % 10
    healthy = behaviour(np.stack([labels, np.where(labels < 5, labels, 0)]), labels, 0.5)
    assert (healthy.accuracy, healthy.chance, healthy.skill) == (0.75, 0.1, pytest.approx(0.65 / 0.9))
    assert healthy.problem is None and healthy.inputs == 100 and healthy.draws == 2
    one_class = behaviour(np.full((4, 100), 3), labels, 1.0)
    assert one_class.skill == pytest.approx(0.0) and one_class.top_share == 1.0
    assert one_class.problem == (
        "its accuracy on 100 held-out inputs under noise (4 Gaussian draws each at sigma 1) is 10.0 %, skill 0.00 "
        "(always answering the most frequent label: 10.0 %), and it predicts class 3 for 100.0 % of them (skill below "
        "0.05; one class for at least 50 %)")
    weak = np.where(np.arange(100) % 20 < 3, labels, (labels + 1) % 10)  # 15 % correct: skill 0.056
    assert behaviour(weak[None], labels, 0.5).problem is None  # weak, but better than a constant answer
    weaker = np.where(np.arange(100) % 50 < 7, labels, (labels + 1) % 10)  # 14 % correct: skill 0.044
    assert "is 14.0 %, skill 0.04 " in behaviour(weaker[None], labels, 0.5).problem
    mostly_zero = np.where(np.arange(100) % 10 < 6, 0, labels)  # half right, but class 0 for 60 % of the inputs
    concentrated = behaviour(mostly_zero[None], labels, 0.5)
    assert concentrated.skill == pytest.approx(0.4 / 0.9)
    assert concentrated.problem.endswith("predicts class 0 for 60.0 % of them (one class for at least 50 %)")
    assert behaviour(np.where(np.arange(100) % 10 < 4, 0, labels)[None], labels, 0.5).problem is None  # 40 %
    assert behaviour(np.full((1, 100), 3), np.full(100, 3), 0.5).problem is None  # one label only: nothing to judge
    assert list(check_indices(5)) == [0, 1, 2, 3, 4] and list(check_indices(10, 4)) == [0, 3, 6, 9]


def class_means(digits):
    """A healthy digits classifier without training: the nearest class mean (linear in the pixels)."""
    x, y = digits[0], digits[1]
    means = torch.stack([torch.as_tensor(x[y == c]).flatten(1).mean(0) for c in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(means * 4)
        model[1].bias.copy_(-(means**2).sum(1) * 2)
    return model


def test_a_deferred_macer_run_at_sigma_1_with_a_healthy_model_is_not_flagged(digits):
    """The case of issue 19: MACER's robustness term starts after its deferral and multiplies the loss."""
    model = class_means(digits)
    macer = get_registry().method("macer")
    config = TrainConfig(epochs=3, batch_size=256, lr=0.01, progress=False)
    history = train(model, macer, macer.hyperparameters(1.0, "paper", deferred=0), 1.0,
                    TensorData(digits[0][:512], digits[1][:512]), config)
    assert history[-1]["loss"] > 10 * history[0]["loss"]  # measured: 0.96 in epoch 1, 33 in epoch 3
    check = check_model(model, digits[2], digits[3], 1.0, seed=0)
    assert check.problem is None and check.skill > 3 * MIN_SKILL  # measured: 0.36 (noisy accuracy 0.44)


def test_a_collapsed_macer_run_is_flagged(digits):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    macer = get_registry().method("macer")
    train(model, macer, macer.hyperparameters(1.0, "paper", deferred=0), 1.0,
          TensorData(digits[0][:256], digits[1][:256]), TrainConfig(epochs=2, batch_size=256, lr=1.0, progress=False))
    check = check_model(model, digits[2], digits[3], 1.0, seed=0)
    assert check.skill < MIN_SKILL and check.top_share > 0.9
    assert "(always answering the most frequent label: 13.1 %)" in check.problem and "skill below 0.05" in check.problem


class Constant(nn.Module):
    def __init__(self, winner):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))
        with torch.no_grad():
            self.bias[winner] = 100.0

    def forward(self, x):
        return self.bias.expand(len(x), 10)


def test_a_model_that_predicts_one_class_is_flagged(digits):
    check = check_model(Constant(7), digits[2], digits[3], 0.25, seed=0)
    assert check.inputs == len(digits[3]) and "it predicts class 7 for 100.0 % of them" in check.problem


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


def test_certify_collapsed_certifies_a_flagged_run_and_marks_it(tmp_path, capsys):
    """An untrained model (lr 0) is flagged; --certify-collapsed certifies it from its checkpoint and says so."""
    budget = Budget(epochs=1, batch_size=64, lr=0.0, lr_step_size=5, soft_samples=10, n0=20, n=100, alpha=0.01,
                    max_examples=10, train_examples=64)
    gaussian = parse_methods("gaussian", get_registry())
    lines = []
    (plain,) = run_comparison("digits", gaussian, 0.5, tmp_path, "quick", budget, log=lines.append)
    (outcome,) = plain.outcomes
    assert "skill below 0.05" in outcome.collapsed and not outcome.certified
    assert outcome.rows_certified == 0
    (anyway,) = run_comparison("digits", gaussian, 0.5, tmp_path, "quick", budget, log=lines.append,
                               certify_collapsed=True)
    (outcome,) = anyway.outcomes
    assert outcome.certified and outcome.rows_certified == 10 and outcome.epochs_trained == 0  # the same model
    assert outcome.collapsed == plain.outcomes[0].collapsed
    assert any(line.startswith("WARNING: gaussian at sigma 0.5 collapsed and is certified anyway") for line in lines)
    markdown = (anyway.directory / "summary.md").read_text()
    assert "| gaussian (collapsed) | 10 |" in markdown and "was certified anyway (--certify-collapsed)" in markdown
    summary = json.loads((anyway.directory / "summary.json").read_text())["methods"][0]
    assert summary["certified"] and summary["acr"] is not None and summary["noisy_check"]["skill"] < MIN_SKILL
    assert main(["compare", "--dataset", "digits", "--methods", "gaussian", "--sigma", "0.5", "--output",
                 str(tmp_path / "cli"), "--epochs", "1", "--batch", "64", "--lr", "0", "--lr-step-size", "5",
                 "--soft-samples", "10", "--N0", "20", "--N", "100", "--alpha", "0.01", "--max", "10",
                 "--train-examples", "64", "--skip", "1", "--quiet", "--certify-collapsed"]) == 0
    assert "| gaussian (collapsed) | 10 |" in capsys.readouterr().out


def test_the_paper_budget_refuses_datasets_it_is_no_recipe_for(tmp_path):
    gaussian = parse_methods("gaussian", get_registry())
    for dataset, preset in (("mnist", "paper"), ("digits", "paper"), ("cifar10", "mnist"), ("mnist", "imagenet")):
        with pytest.raises(ValueError, match=rf"--preset {preset} is the reference's recipe for .*none for "
                                             rf"'{dataset}' \(recipes: cifar10, cifar100: paper; imagenet: imagenet; "
                                             r"mnist: mnist\); --preset quick runs any dataset"):
            run_comparison(dataset, gaussian, 0.25, tmp_path / dataset, preset)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_mnist_recipe_of_the_reference():
    """LeNet at lr 0.01 for every method (EXPERIMENTS.MD's MNIST command); CAT-RS's lambda 1 at sigma 0.25."""
    registry = get_registry()
    mnist = {"epochs": 150, "batch_size": 256, "lr": 0.01, "lr_step_size": 50}
    catrs = plan_run(registry.method("catrs"), 0.25, "mnist", BUDGETS["mnist"])
    assert (catrs.preset, catrs.hyperparameters["lbd"], catrs.train) == ("mnist", 1.0, mnist)
    unrecorded = plan_run(registry.method("catrs"), 1.0, "mnist", BUDGETS["mnist"])  # no released MNIST run
    assert (unrecorded.preset, unrecorded.hyperparameters["lbd"], unrecorded.train) == ("paper", 2.0, mnist)
    for name in ("gaussian", "stability", "smoothadv", "macer", "consistency", "smoothmix"):
        assert plan_run(registry.method(name), 0.5, "mnist", BUDGETS["mnist"]).train["lr"] == 0.01, name
    assert (BUDGETS["mnist"].n, BUDGETS["mnist"].skip) == (100_000, 1)
    assert registry.method("catrs").hyperparameters(0.25, "mnist")["lbd"] == 1.0
    assert registry.method("catrs").train_settings("mnist") == mnist == registry.method("gaussian").train_settings(
        "mnist")


def test_macer_presets_carry_their_own_optimiser_settings():
    macer = get_registry().method("macer")
    quick = plan_run(macer, 0.25, "quick", BUDGETS["quick"])
    assert quick.train == {"epochs": 40, "batch_size": 256, "lr": 0.01, "lr_step_size": 13}
    pinned = plan_run(macer, 0.25, "quick", Budget(**{**BUDGETS["quick"].__dict__, "lr": 0.1, "pinned": ("lr",)}))
    assert pinned.train["lr"] == 0.1  # a learning rate given on the command line wins
    paper = plan_run(macer, 0.5, "paper", BUDGETS["paper"])
    assert paper.hyperparameters["lbd"] == 4.0 and paper.train == {"epochs": 150, "batch_size": 256, "lr": 0.1,
                                                                    "lr_step_size": 50}
    original = plan_run(macer, 0.5, "original", BUDGETS["paper"])
    assert original.train == {"epochs": 440, "batch_size": 64, "lr": 0.01, "lr_step_size": 50, "weight_decay": 5e-4,
                              "lr_milestones": (199, 399)}
    assert original.hyperparameters["lbd"] == 12.0 and original.hyperparameters["num_chunks"] == 1
