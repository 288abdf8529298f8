"""The ART adapters: PyTorchCATRS, CATRSTrainer, the import hook and ART's L2 PGD against certificates."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.data_generators import PyTorchDataGenerator
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from torch.utils.data import DataLoader, TensorDataset

from catrs_adapters.art.estimator import PyTorchCATRS
from catrs_adapters.art.trainer import CATRSTrainer
from catrs_adapters.datasets import DIGITS
from catrs_plugin.models import digits_cnn
from catrs_plugin.registry import get_registry
from catrs_plugin.smoothing import Smooth


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
    with pytest.raises(ValueError, match="needs soft labels"):
        estimator.fit(x[:64], y[:64], nb_epochs=1)
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
