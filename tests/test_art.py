"""The ART adapters: PyTorchCATRS, CATRSTrainer, the import hook and ART's L2 PGD against certificates."""

import copy
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from art.attacks import evasion
from art.attacks.evasion import ProjectedGradientDescent
from art.data_generators import PyTorchDataGenerator
from art.defences.trainer import AdversarialTrainer, AdversarialTrainerMadryPGD
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from art.exceptions import EstimatorError
from torch.utils.data import DataLoader, TensorDataset

from catrs_adapters.art.attacks import UnsupportedAttack
from catrs_adapters.art.estimator import PyTorchCATRS
from catrs_adapters.art.trainer import CATRSTrainer
from catrs_adapters.datasets import DIGITS
from catrs_plugin.backbones.digits import digits_cnn
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.train.soft_labels import smoothed_soft_labels
from catrs_plugin.utils import streams
from catrs_plugin.utils.streams import derive_seed


def smoothed(model=None, **kwargs):
    settings = dict(sample_size=100, scale=0.25, alpha=0.001, device_type="cpu", clip_values=(0.0, 1.0))
    settings.update(kwargs)
    model = model if model is not None else get_registry().create_model("digits_cnn", "digits")
    return PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), DIGITS.input_shape, 10, **settings)


@pytest.fixture(scope="module")
def trained(digits):
    """A PyTorchCATRS estimator trained with Gaussian noise through its ART ``fit``."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    estimator = smoothed(method="gaussian")
    estimator.fit(x, np.eye(10)[y], nb_epochs=8, batch_size=64, lr=0.1)  # one-hot labels, ART's convention
    return estimator


def test_fit_trains_and_predict_returns_one_hot_rows(trained, digits):
    _, _, x, y = digits
    rows = trained.predict(x[:100])
    assert rows.shape == (100, 10)
    assert set(np.unique(rows)) <= {0.0, 1.0}
    assert set(rows.sum(axis=1)) <= {0.0, 1.0}
    answered = rows.sum(axis=1) == 1
    assert answered.mean() > 0.8
    assert (rows.argmax(axis=1)[answered] == y[:100][answered]).mean() > 0.9
    assert (trained.predict(x[:100], is_abstain=False).sum(axis=1) == 1).all()


def test_certify_runs_our_engine_with_n0_equal_to_sample_size(trained, digits):
    _, _, x, _ = digits
    prediction, radius = trained.certify(x[:12], n=500, batch_size=64)
    engine = Smooth(trained.model, 10, 0.25, batch_size=1000, seed=0)
    expected = engine.certify(x[:12], n0=100, n=500, alpha=0.001)
    np.testing.assert_array_equal(prediction, expected[0])
    np.testing.assert_array_equal(radius, expected[1])
    subset = trained.certify(x[[3, 7]], n=500, indices=[3, 7])
    np.testing.assert_array_equal(subset[1], radius[[3, 7]])
    assert radius.max() > 0


def test_sequential_certify_keeps_arts_signature_and_our_engines_results(trained, digits):
    _, _, x, y = digits
    prediction, radius = trained.certify(x[:12], 3000, 64, None, False, sequential=True, radii=(0.25, 0.5),
                                         labels=np.eye(10)[y[:12]])
    expected = Smooth(trained.model, 10, 0.25, batch_size=1000, seed=0).certify_sequential(
        x[:12], 100, 3000, 0.001, radii=(0.25, 0.5), labels=y[:12])
    np.testing.assert_array_equal(prediction, expected.predictions)
    np.testing.assert_array_equal(radius, expected.radii)
    assert expected.samples.mean() < 3000 and radius.max() > 0
    with pytest.raises(ValueError, match="sequential=True only"):
        trained.certify(x[:2], 100, labels=y[:2])


def test_predict_abstains_with_zero_rows_on_a_tie():
    class Tie(torch.nn.Module):
        def forward(self, x):
            left = (x.flatten(1)[:, 0] > 0.5).float()
            return torch.stack([left, 1 - left] + [torch.full_like(left, -1.0)] * 8, dim=1)

    estimator = smoothed(Tie(), sample_size=2000, scale=1.0)
    rows = estimator.predict(np.full((3, 1, 8, 8), 0.5, np.float32))
    np.testing.assert_array_equal(rows, np.zeros((3, 10)))
    prediction, radius = estimator.certify(np.full((2, 1, 8, 8), 0.5, np.float32), n=2000)
    np.testing.assert_array_equal(prediction, [-1, -1])
    np.testing.assert_array_equal(radius, [0.0, 0.0])


def test_art_preprocessing_is_applied_after_the_noise(digits):
    _, _, x, _ = digits
    torch.manual_seed(1)
    normalised = get_registry().create_model("digits_cnn", "digits")
    bare = normalised[1]
    ours = smoothed(normalised).certify(x[:6], n=300)
    art_preprocessed = smoothed(bare, preprocessing=(DIGITS.mean, DIGITS.std)).certify(x[:6], n=300)
    np.testing.assert_array_equal(ours[0], art_preprocessed[0])
    np.testing.assert_allclose(ours[1], art_preprocessed[1], rtol=1e-6)


def test_bad_arguments_name_what_is_wrong(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="scale"):
        smoothed(scale=0.0)
    with pytest.raises(ValueError, match="sample_size"):
        smoothed(sample_size=0)
    with pytest.raises(ValueError, match="alpha"):
        smoothed(alpha=1.5)
    with pytest.raises(ValueError, match="no hyper-parameter 'nope'"):
        smoothed(hyperparameters={"nope": 1})
    estimator = smoothed()
    with pytest.raises(ValueError, match="teacher_epochs must be an integer >= 1, got 0"):
        estimator.fit(x[:64], y[:64], nb_epochs=1, teacher_epochs=0)
    with pytest.raises(ValueError, match="teacher_samples must be an integer >= 1, got 0"):
        estimator.fit(x[:64], y[:64], nb_epochs=1, teacher_samples=0)
    with pytest.raises(ValueError, match="teacher must be an ART PyTorchRandomizedSmoothing estimator"):
        estimator.fit(x[:64], y[:64], nb_epochs=1, teacher="gaussian.pt")
    with pytest.raises(ValueError, match="unknown training option"):  # before a teacher is trained
        estimator.fit(x[:64], y[:64], nb_epochs=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="soft_labels must have shape"):
        estimator.fit(x[:64], y[:64], nb_epochs=1, soft_labels=np.full((64, 9), 1 / 9))
    with pytest.raises(ValueError, match="channels"):
        estimator.certify(np.zeros((2, 3, 8, 8), np.float32), n=10)
    with pytest.raises(ValueError, match="unknown training option"):
        smoothed(method="gaussian").fit(x[:64], y[:64], nb_epochs=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="classifier must be an ART PyTorchRandomizedSmoothing"):
        CATRSTrainer(digits_cnn(10, 1))
    with pytest.raises(ValueError, match="pass lbd"):
        CATRSTrainer(smoothed(scale=0.3))
    with pytest.raises(ValueError, match="teacher"):
        CATRSTrainer(estimator).fit(x[:64], y[:64], nb_epochs=1)


def test_trainer_takes_soft_labels_from_a_teacher(trained, digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    student = smoothed(scale=0.5)
    trainer = CATRSTrainer(student, num_noise_vec=2, epsilon=1.0, num_steps=1)
    assert trainer.hyperparameters["lbd"] == 1.0  # the paper's value at sigma 0.5
    assert trainer.get_classifier() is student
    soft = trainer.teacher_soft_labels(trained, x[:128], samples=200, verbose=False)
    assert soft.shape == (128, 10)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    assert (soft.argmax(axis=1) == y[:128]).mean() > 0.8
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    history = trainer.fit(x[:128], y[:128], nb_epochs=2, batch_size=64, teacher=trained, teacher_samples=200,
                          verbose=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert any(not torch.equal(before[k], v) for k, v in student.model.state_dict().items())


def test_fit_without_soft_labels_is_the_papers_whole_recipe(digits, tmp_path, caplog):
    """ART's fit(x, y): a Gaussian teacher at sigma 0.25, its smoothed predictions, then CAT-RS, in one call."""
    x, y = digits[0][:256], digits[1][:256]
    torch.manual_seed(0)
    start = get_registry().create_model("digits_cnn", "digits")
    estimator = smoothed(copy.deepcopy(start), scale=0.5)
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        estimator.fit(x, y, nb_epochs=2, batch_size=64, teacher_samples=50, lr=0.1,
                      checkpoint=str(tmp_path / "catrs.pt"))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit")]
    assert line.startswith("fit without soft labels, so the paper's recipe: trained a Gaussian teacher (a copy of "
                           "the network) at sigma 0.25 for 2 epochs on (x, y); its smoothed predictions on x (50 noise "
                           "samples each) are the soft labels catrs now trains with")
    assert read_checkpoint(tmp_path / "catrs.pt.teacher")["method"] == "gaussian"
    # The same three steps by hand, with the seeds fit documents, give the same network.
    seed = derive_seed(streams.FIT_CALL, 0, 0)
    teacher_seed = derive_seed(streams.TEACHER, seed)
    teacher = copy.deepcopy(start)
    train(teacher, get_registry().method("gaussian"), {}, 0.25, TensorData(x, y),
          TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=teacher_seed, progress=False))
    soft = smoothed_soft_labels(teacher, x, 10, 0.25, 50, seed=teacher_seed)
    by_hand = smoothed(copy.deepcopy(start), scale=0.5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        by_hand.fit(x, y, nb_epochs=2, batch_size=64, soft_labels=soft, lr=0.1)
    assert "fit: catrs trains with the soft labels given" in caplog.messages
    for ours, theirs in zip(estimator.model.parameters(), by_hand.model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), estimator.model.parameters()))


def test_arts_own_fit_test_passes_with_the_class_swapped(digits, caplog):
    """ART's test_randomized_smoothing_mnist_fit: an Adam optimizer, scale 0.01, ``rs.fit(x=x_test, y=y_test)``."""
    _, _, x_test, y_test = digits
    model = get_registry().create_model("digits_cnn", "digits")
    rs = PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                      input_shape=DIGITS.input_shape, nb_classes=10, channels_first=True, clip_values=(0.0, 1.0),
                      sample_size=100, scale=0.01, alpha=0.001)
    before = [p.detach().clone() for p in model.parameters()]
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        rs.fit(x=x_test[:10], y=np.eye(10)[y_test[:10]])
    assert any("trained a Gaussian teacher (a copy of the network) at sigma 0.25 for 10 epochs" in message
               for message in caplog.messages)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_takes_a_teacher_instead_of_training_one(trained, digits, caplog):
    x, y, _, _ = digits
    student = smoothed(scale=0.5)
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        student.fit(x[:64], y[:64], nb_epochs=1, batch_size=64, teacher=trained, teacher_samples=20)
    assert any(m.startswith("fit without soft labels, so the paper's recipe: took the teacher given, smoothed at "
                            "sigma 0.25; its smoothed predictions on x (20 noise samples each)") for m in caplog.messages)


def test_fit_generator_trains_from_a_data_loader_and_resumes(digits, tmp_path):
    x, y, _, _ = digits
    soft = np.eye(10, dtype=np.float32)[y[:128]]
    loader = DataLoader(TensorDataset(torch.tensor(x[:128]), torch.tensor(y[:128]), torch.tensor(soft)),
                        batch_size=32, shuffle=True)

    def run(epochs):
        torch.manual_seed(0)
        estimator = smoothed(scale=0.25)
        trainer = CATRSTrainer(estimator, num_noise_vec=2, num_steps=1)
        trainer.fit_generator(PyTorchDataGenerator(loader, size=128, batch_size=32), nb_epochs=epochs,
                              verbose=False, checkpoint=str(tmp_path / f"run{epochs}.pt"))
        return estimator

    whole = run(2)
    first = run(1)
    (tmp_path / "run1.pt").rename(tmp_path / "run2b.pt")
    torch.manual_seed(0)
    resumed = smoothed(scale=0.25)
    CATRSTrainer(resumed, num_noise_vec=2, num_steps=1).fit_generator(
        PyTorchDataGenerator(loader, size=128, batch_size=32), nb_epochs=2, verbose=False,
        checkpoint=str(tmp_path / "run2b.pt"))
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                     whole.model.state_dict().values()))
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    with pytest.raises(ValueError, match="PyTorchDataGenerator"):
        first.fit_generator(loader, nb_epochs=1)


def test_l2_pgd_does_not_flip_examples_certified_beyond_its_eps(trained, digits):
    _, _, x, y = digits
    x, y = x[:48], y[:48]
    eps = 0.25
    prediction, radius = trained.certify(x, n=2000)
    attack = ProjectedGradientDescent(trained, norm=2, eps=eps, eps_step=eps / 4, max_iter=6, batch_size=16,
                                      verbose=False)
    adversarial = attack.generate(x, y=y)
    distance = np.linalg.norm((adversarial - x).reshape(len(x), -1), axis=1)
    assert distance.max() <= eps + 1e-5 and distance.mean() > 0.5 * eps
    rows = trained.predict(adversarial)
    answered = rows.sum(axis=1) == 1
    flipped = answered & (rows.argmax(axis=1) != prediction)
    certified = radius > eps
    assert certified.sum() >= 20
    assert not (flipped & certified).any()
    # The attack is real: it lowers the smoothed classifier's accuracy.
    clean = trained.predict(x)
    clean_correct = (clean.sum(axis=1) == 1) & (clean.argmax(axis=1) == y)
    assert (answered & (rows.argmax(axis=1) == y)).sum() < clean_correct.sum()


class RecordingSGD(torch.optim.SGD):
    """SGD that records the learning rate of every step it takes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rates = []

    def step(self, closure=None):
        self.rates.append(self.param_groups[0]["lr"])
        return super().step(closure)


def with_optimizer(lr=0.05, **kwargs):
    model = get_registry().create_model("digits_cnn", "digits")
    return smoothed(model, method="gaussian", optimizer=RecordingSGD(model.parameters(), lr=lr, momentum=0.9),
                    **kwargs)


def test_fit_trains_with_the_users_optimizer_and_never_touches_its_learning_rate(digits):
    x, y, _, _ = digits
    estimator = with_optimizer()
    optimizer = estimator.optimizer
    # 52 epochs of one step: the loop's own schedule (x0.1 after 50 epochs) must not reach this optimizer.
    estimator.fit(x[:32], y[:32], batch_size=32, nb_epochs=52)
    assert estimator.optimizer is optimizer and optimizer.rates == [0.05] * 52
    assert "initial_lr" not in optimizer.param_groups[0]
    with pytest.raises(ValueError, match="lr, gamma configure the SGD optimizer .* this estimator has its own"):
        estimator.fit(x[:32], y[:32], nb_epochs=1, lr=0.1, gamma=0.5)
    with pytest.raises(ValueError, match="scheduler needs the estimator's optimizer"):
        smoothed(method="gaussian").fit(x[:32], y[:32], nb_epochs=1, scheduler=torch.optim.lr_scheduler.StepLR(
            torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), 1))
    with pytest.raises(ValueError, match="scheduler must be a learning-rate scheduler .* of this estimator's"):
        estimator.fit(x[:32], y[:32], nb_epochs=1, scheduler=torch.optim.lr_scheduler.StepLR(
            torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), 1))


def test_fit_steps_the_users_scheduler_after_every_epoch_as_art_does(digits):
    x, y, _, _ = digits
    estimator = with_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(estimator.optimizer, step_size=2, gamma=0.5)
    estimator.fit(x[:64], y[:64], batch_size=32, nb_epochs=5, scheduler=scheduler)
    assert estimator.optimizer.rates == [0.05] * 4 + [0.025] * 4 + [0.0125] * 2  # two steps per epoch
    assert scheduler.last_epoch == 5 and estimator.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)
    estimator.fit(x[:64], y[:64], batch_size=64, nb_epochs=1, scheduler=scheduler)  # ART's trainers call fit again
    assert estimator.optimizer.rates[-1] == pytest.approx(0.0125) and scheduler.last_epoch == 6
    with pytest.raises(ValueError, match="checkpoint cannot be combined with scheduler"):
        estimator.fit(x[:64], y[:64], nb_epochs=1, scheduler=scheduler, checkpoint="unused.pt")


def test_fit_honours_drop_last_training_mode_and_validation_data(digits, caplog):
    x, y, x_test, y_test = digits
    estimator = with_optimizer()
    modes = []
    estimator.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    estimator.fit(x[:70], y[:70], batch_size=32, nb_epochs=2, drop_last=True)
    assert len(estimator.optimizer.rates) == 4 and set(modes) == {True}  # 70 // 32 full batches per epoch
    estimator.fit(x[:70], y[:70], batch_size=32, nb_epochs=2)
    assert len(estimator.optimizer.rates) == 4 + 6
    modes.clear()
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        estimator.fit(x[:70], y[:70], batch_size=32, nb_epochs=3, training_mode=False,
                      validation_data=(x_test[:50], np.eye(10)[y_test[:50]]))
    assert modes and set(modes) == {False}
    logged = [record.getMessage() for record in caplog.records if "validation accuracy" in record.getMessage()]
    assert [line.split(":")[0] for line in logged] == ["epoch 1", "epoch 2", "epoch 3"]
    rows = estimator.predict(x_test[:50])
    correct = int(((rows.sum(axis=1) == 1) & (rows.argmax(axis=1) == y_test[:50])).sum())
    assert f"({correct} of 50 correct" in logged[-1]  # the same PREDICT as the estimator's, same noise
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        estimator.fit(x[:32], y[:32], nb_epochs=1, validation_data=x_test[:5])


def soft_accuracy(estimator, x, y):
    return float((estimator.soft_logits(x).argmax(axis=1) == y).mean())


def test_art_adversarial_trainers_train_the_smoothed_classifier(digits, caplog):
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    np.random.seed(0)  # ART's trainers shuffle and draw from numpy's global generator
    estimator = with_optimizer(lr=0.1, sample_size=16)
    before = soft_accuracy(estimator, x_test[:100], y_test[:100])
    madry = AdversarialTrainerMadryPGD(estimator, nb_epochs=3, batch_size=32, eps=0.1, eps_step=0.05, max_iter=2,
                                       num_random_init=0)
    with caplog.at_level(logging.INFO, logger="catrs_adapters.art.fitting"):
        madry.fit(x[:512], y[:512], validation_data=(x_test[:40], y_test[:40]))
    assert sum("validation accuracy" in record.getMessage() for record in caplog.records) == 3 * 512 // 32
    after = soft_accuracy(estimator, x_test[:100], y_test[:100])
    assert before < 0.3 and after > 0.5
    AdversarialTrainer(estimator, evasion.FastGradientMethod(estimator, eps=0.1), ratio=0.5).fit(
        x[:256], y[:256], nb_epochs=1, batch_size=64)
    assert soft_accuracy(estimator, x_test[:100], y_test[:100]) > 0.5


def test_class_gradient_is_consistent_with_loss_gradient(trained, digits):
    _, _, x, y = digits
    torch.manual_seed(3)
    loss_gradient = trained.loss_gradient(x[:4], y[:4])
    torch.manual_seed(3)
    per_label = trained.class_gradient(x[:4], label=y[:4])
    torch.manual_seed(3)
    every_class = trained.class_gradient(x[:4])
    assert per_label.shape == (4, 1, 1, 8, 8) and every_class.shape == (4, 10, 1, 8, 8)
    np.testing.assert_allclose(loss_gradient * 4, -per_label[:, 0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(every_class[np.arange(4), y[:4]], per_label[:, 0], rtol=1e-5, atol=1e-8)
    torch.manual_seed(3)
    one_class = trained.class_gradient(torch.tensor(x[:4]), label=2)
    assert isinstance(one_class, torch.Tensor)
    np.testing.assert_allclose(one_class[:, 0].numpy(), every_class[:, 2], rtol=1e-5, atol=1e-8)
    torch.manual_seed(3)
    losses = trained.compute_loss(x[:4], y[:4])
    torch.manual_seed(3)
    logits = trained.soft_logits(x[:4])
    np.testing.assert_allclose(losses, -logits[np.arange(4), y[:4]], rtol=1e-5)
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, rtol=1e-5)
    assert trained.predict(x[:4], logits=True).shape == (4, 10)


ATTACKS = {
    "FGM L2": lambda e: evasion.FastGradientMethod(e, norm=2, eps=0.5, batch_size=8),
    "FGM Linf": lambda e: evasion.FastGradientMethod(e, norm=np.inf, eps=0.1, batch_size=8),
    "PGD L2": lambda e: evasion.ProjectedGradientDescent(e, norm=2, eps=0.5, eps_step=0.2, max_iter=4, batch_size=8,
                                                         verbose=False),
    "PGD Linf": lambda e: evasion.ProjectedGradientDescent(e, norm=np.inf, eps=0.1, eps_step=0.03, max_iter=4,
                                                           batch_size=8, verbose=False),
    "APGD L2": lambda e: evasion.AutoProjectedGradientDescent(e, norm=2, eps=0.5, eps_step=0.2, max_iter=4,
                                                              nb_random_init=1, batch_size=8, verbose=False),
    "DeepFool": lambda e: evasion.DeepFool(e, max_iter=5, batch_size=8, verbose=False),
    "CW L2": lambda e: evasion.CarliniL2Method(e, max_iter=4, binary_search_steps=2, learning_rate=0.1,
                                               initial_const=1.0, batch_size=8, verbose=False),
    "CW Linf": lambda e: evasion.CarliniLInfMethod(e, max_iter=2, learning_rate=0.1, largest_const=2.0,
                                                   verbose=False),
}
#: (norm, eps) of the attacks with a budget.
BUDGETS = {"FGM L2": (2, 0.5), "FGM Linf": (np.inf, 0.1), "PGD L2": (2, 0.5), "PGD Linf": (np.inf, 0.1),
           "APGD L2": (2, 0.5)}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_gradient_attacks_run_on_the_smoothed_soft_classifier(trained, digits, name):
    _, _, x, y = digits
    count = 2 if name == "CW Linf" else 8
    x, y = x[:count], y[:count]
    torch.manual_seed(0)
    attack = ATTACKS[name](trained)
    assert attack.estimator is trained  # APGD (loss_type=None) keeps the estimator: our loss_gradient, compute_loss
    adversarial = attack.generate(x, y=y)
    assert adversarial.shape == x.shape and adversarial.min() >= 0.0 and adversarial.max() <= 1.0 + 1e-6
    if name in BUDGETS:
        norm, eps = BUDGETS[name]
        moved = np.linalg.norm((adversarial - x).reshape(count, -1), ord=norm, axis=1)
        assert moved.max() <= eps + 1e-5
    torch.manual_seed(1)
    clean = trained.compute_loss(x, y).mean()
    torch.manual_seed(1)
    attacked = trained.compute_loss(adversarial, y).mean()
    assert attacked > clean + 0.1  # the smoothed soft classifier's loss rises: it is the one attacked


REFUSED = {
    "HopSkipJump": lambda e: evasion.HopSkipJump(e, max_iter=1, max_eval=5, init_eval=2, verbose=False),
    "BoundaryAttack": lambda e: evasion.BoundaryAttack(e, max_iter=1, verbose=False),
    "SignOPTAttack": lambda e: evasion.SignOPTAttack(e, targeted=False, verbose=False),
    "ZooAttack": lambda e: evasion.ZooAttack(e, max_iter=1, nb_parallel=1, verbose=False),
    "SimBA": lambda e: evasion.SimBA(e, max_iter=1, verbose=False),
    "SquareAttack": lambda e: evasion.SquareAttack(e, max_iter=1, verbose=False),
    "PixelAttack": lambda e: evasion.PixelAttack(e, max_iter=1, verbose=False),
    "VirtualAdversarialMethod": lambda e: evasion.VirtualAdversarialMethod(e, max_iter=1),
    "AutoAttack": lambda e: evasion.AutoAttack(e),
    "AutoProjectedGradientDescent": lambda e: evasion.AutoProjectedGradientDescent(e, loss_type="cross_entropy"),
    "AutoConjugateGradient": lambda e: evasion.AutoConjugateGradient(e, loss_type="difference_logits_ratio"),
    "AdversarialPatchPyTorch": lambda e: evasion.AdversarialPatchPyTorch(e, patch_shape=(1, 4, 4), max_iter=1,
                                                                         verbose=False),
    "FeatureAdversariesPyTorch": lambda e: evasion.FeatureAdversariesPyTorch(e, delta=0.1, layer=1, max_iter=1,
                                                                             step_size=0.01),
    "CompositeAdversarialAttackPyTorch": lambda e: evasion.CompositeAdversarialAttackPyTorch(e),
}
REASONS = {"HopSkipJump": "decision boundary", "BoundaryAttack": "decision boundary",
           "SignOPTAttack": "decision boundary", "AutoAttack": "'rand' version",
           "AutoProjectedGradientDescent": "loss_type='cross_entropy'",
           "AutoConjugateGradient": "loss_type='difference_logits_ratio'"}


@pytest.mark.parametrize("name", list(REFUSED))
def test_attacks_that_make_no_sense_on_a_smoothed_classifier_are_refused_with_the_reason(digits, name):
    _, _, x, y = digits
    estimator = smoothed(sample_size=8)
    reason = REASONS.get(name, "Monte-Carlo estimates" if "PyTorch" not in name else "estimator.model")
    with pytest.raises(UnsupportedAttack, match=f"^{name} does not run on the smoothed classifier PyTorchCATRS: "
                                                f".*{reason}.*Instead, attack the smoothed classifier"):
        attack = REFUSED[name](estimator)
        attack.generate(x[:1], y=x[1:2] if name == "FeatureAdversariesPyTorch" else np.eye(10)[y[:1]])


def test_art_itself_refuses_attacks_for_other_kinds_of_estimator():
    with pytest.raises(EstimatorError, match="DPatch requires .*ObjectDetectorMixin"):
        evasion.DPatch(smoothed(sample_size=8))


def test_inputs_outside_clip_values_are_refused_and_what_art_accepts_is_accepted(trained, digits, tmp_path):
    x, y, x_test, y_test = digits
    x_test, y_test = x_test[:6], y_test[:6]
    scaled = x_test * 10 - 5
    as_uint8 = np.round(x_test * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"^x must lie within the estimator's clip_values \[0, 1\], got values in "
                                         r"\[-5, 5\]"):
        trained.certify(scaled, n=100)
    with pytest.raises(ValueError, match=r"clip_values \[0, 1\], got values in \[0, 255\] \(integer images such "
                                         r"as uint8 0..255 must be scaled"):
        trained.certify(as_uint8, n=100)
    for call in (lambda: trained.predict(scaled), lambda: trained.loss_gradient(scaled, y_test),
                 lambda: trained.class_gradient(scaled), lambda: trained.compute_loss(scaled, y_test),
                 lambda: trained.predict(torch.tensor(scaled))):
        with pytest.raises(ValueError, match="^x must lie within the estimator's clip_values"):
            call()
    estimator = with_optimizer()
    with pytest.raises(ValueError, match="^x must lie within"):
        estimator.fit(as_uint8, y_test, nb_epochs=1)
    with pytest.raises(ValueError, match=r"^validation_data\[0\] must lie within"):
        estimator.fit(x_test, y_test, nb_epochs=1, validation_data=(scaled, y_test))
    loader = DataLoader(TensorDataset(torch.tensor(scaled), torch.tensor(y_test)), batch_size=3)
    with pytest.raises(ValueError, match="^the generator's batch must lie within"):
        estimator.fit_generator(PyTorchDataGenerator(loader, size=6, batch_size=3), nb_epochs=1)
    with pytest.raises(ValueError, match="x must hold real numbers"):
        trained.certify(np.full((1, 1, 8, 8), "a"), n=10)
    # What ART accepts: Python lists and other numeric dtypes give the same results as float32 arrays.
    reference = trained.certify(x_test, n=200)
    for same in (x_test.tolist(), x_test.astype(np.float64)):
        result = trained.certify(same, n=200)
        np.testing.assert_array_equal(result[0], reference[0])
        np.testing.assert_array_equal(result[1], reference[1])
    np.testing.assert_array_equal(trained.predict(x_test.tolist()), trained.predict(x_test))
    binary = (x_test > 0.5).astype(np.uint8)  # integers inside the range are fine
    np.testing.assert_array_equal(trained.certify(binary, n=200)[0],
                                  trained.certify(binary.astype(np.float32), n=200)[0])
    trained.certify(np.clip(x_test + 1e-6, 0, None), n=10)  # rounding at the bounds (Carlini-Wagner's tanh) passes
    unbounded = smoothed(trained.model, clip_values=None)
    assert unbounded.certify(scaled, n=50)[0].shape == (6,)  # no clip_values: ART's unbounded inputs


@pytest.mark.cuda
def test_soft_classifier_gradients_and_input_checks_on_cuda(digits):
    x, y, x_test, y_test = digits
    model = get_registry().create_model("digits_cnn", "digits").cuda()
    estimator = smoothed(model, method="gaussian", device_type="gpu", sample_size=32)
    estimator.fit(x[:256], y[:256], nb_epochs=2, batch_size=64, lr=0.1, validation_data=(x_test[:20], y_test[:20]))
    inputs = torch.tensor(x_test[:4], device="cuda")
    gradient = estimator.class_gradient(inputs, label=y_test[:4])
    assert gradient.is_cuda and gradient.shape == (4, 1, 1, 8, 8)
    assert estimator.loss_gradient(inputs, torch.tensor(y_test[:4], device="cuda")).is_cuda
    assert isinstance(estimator.class_gradient(x_test[:4]), np.ndarray)
    with pytest.raises(ValueError, match="^x must lie within the estimator's clip_values"):
        estimator.loss_gradient(inputs * 255, y_test[:4])
    adversarial = evasion.ProjectedGradientDescent(estimator, norm=2, eps=0.5, eps_step=0.25, max_iter=2,
                                                   verbose=False).generate(x_test[:4], y=y_test[:4])
    assert np.linalg.norm((adversarial - x_test[:4]).reshape(4, -1), axis=1).max() <= 0.5 + 1e-5


def test_loss_gradient_is_that_of_the_smoothed_soft_classifier(trained, digits):
    _, _, x, y = digits
    torch.manual_seed(0)
    gradient = trained.loss_gradient(x[:4], y[:4])
    assert isinstance(gradient, np.ndarray) and gradient.shape == x[:4].shape
    inputs = torch.tensor(x[:4], requires_grad=True)
    torch.manual_seed(0)
    noisy = inputs.repeat_interleave(100, 0)
    noisy = noisy + torch.randn_like(noisy) * 0.25
    trained.model.eval()
    probs = torch.softmax(trained.model(noisy), dim=1).view(4, 100, 10).mean(dim=1)
    loss = torch.nn.functional.nll_loss(torch.log(probs), torch.tensor(y[:4]))
    (expected,) = torch.autograd.grad(loss, inputs)
    np.testing.assert_allclose(gradient, expected.numpy(), rtol=1e-4, atol=1e-7)
    as_tensor = trained.loss_gradient(torch.tensor(x[:2]), torch.tensor(y[:2]))
    assert isinstance(as_tensor, torch.Tensor)
    base = trained.loss_gradient(x[:2], np.eye(10)[y[:2]], sampling=False)  # ART wants one-hot here
    assert base.shape == x[:2].shape


HOOK_CHECK = textwrap.dedent(
    """
    import sys
    import art.defences.trainer as trainers
    assert "catrs_adapters.art.trainer" not in sys.modules  # nothing of ours is imported before use
    from art.defences.trainer import AdversarialTrainer, CATRSTrainer
    from art.estimators.certification.randomized_smoothing import PyTorchCATRS, PyTorchRandomizedSmoothing
    from catrs_adapters.art.trainer import CATRSTrainer as ours
    assert CATRSTrainer is ours and AdversarialTrainer.__module__.startswith("art.")
    assert issubclass(PyTorchCATRS, PyTorchRandomizedSmoothing)
    assert "catrs_plugin" in sys.modules
    try:
        from art.defences.trainer import NoSuchTrainer
    except ImportError:
        print("ok")
    """
)


def test_art_import_hook_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-c", HOOK_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_catrs_plugin_exports_the_art_classes():
    import catrs_plugin

    assert catrs_plugin.CATRSTrainer is CATRSTrainer
    assert catrs_plugin.PyTorchCATRS is PyTorchCATRS
    assert issubclass(PyTorchCATRS, PyTorchRandomizedSmoothing)
