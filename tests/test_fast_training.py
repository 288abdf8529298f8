"""The fast training path (mixed precision, channels_last, fused SGD) against plain fp32.

With ``lr=0`` the weights never move, so an epoch's mean loss is the mean of the method's
loss over fixed inputs and fixed noises (the noise generator is seeded per epoch and the
fast options do not touch it): the fast and plain paths must agree within the rounding of
the precision used.
"""

import numpy as np
import pytest
import torch

from catrs_plugin.checkpoint import read_checkpoint
from catrs_plugin.registry import get_registry
from catrs_plugin.training import TensorData, TrainConfig, train

EXAMPLES = 128


@pytest.fixture(scope="module")
def data(digits):
    x, y = digits[0][:EXAMPLES], digits[1][:EXAMPLES]
    soft = np.random.default_rng(0).dirichlet(np.ones(10), size=EXAMPLES).astype(np.float32)
    return TensorData(x, y, soft)


@pytest.fixture(scope="module")
def weights(digits):
    """A briefly trained network, so that logits are far from uniform and rounding shows."""
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, progress=False)
    train(model, get_registry().method("gaussian"), {}, 0.25, TensorData(digits[0], digits[1]), config)
    return model.state_dict()


def _epoch_loss(data, method, lr=0.0, epochs=1, checkpoint=None, start=None, **options):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    if start is not None:
        model.load_state_dict(start)
    registry_method = get_registry().method(method)
    hyperparameters = registry_method.hyperparameters(num_steps=2) if method == "catrs" else {}
    config = TrainConfig(epochs=epochs, batch_size=64, lr=lr, progress=False, checkpoint=checkpoint, **options)
    history = train(model, registry_method, hyperparameters, 0.25, data, config)
    return history[-1]["loss"], model


@pytest.mark.parametrize("method", ["gaussian", "catrs"])
def test_channels_last_computes_the_same_loss(data, weights, method):
    plain, _ = _epoch_loss(data, method, start=weights)
    fast, model = _epoch_loss(data, method, start=weights, channels_last=True)
    assert model[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast == pytest.approx(plain, rel=1e-4)


@pytest.mark.parametrize("method", ["gaussian", "catrs"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_computes_the_same_loss_within_its_rounding(data, weights, method, amp):
    plain, _ = _epoch_loss(data, method, start=weights)
    fast, model = _epoch_loss(data, method, start=weights, amp=amp, channels_last=True)
    assert model[1][0].weight.dtype == torch.float32  # autocast: the weights stay fp32
    assert fast != plain
    assert fast == pytest.approx(plain, rel=1e-2)  # measured: about 3e-3 (bf16), 2e-4 (fp16)


def test_fused_sgd_takes_the_same_steps(data):
    _, plain = _epoch_loss(data, "gaussian", lr=0.1, epochs=2)
    _, fused = _epoch_loss(data, "gaussian", lr=0.1, epochs=2, fused=True)
    for p, q in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fp16_gradient_scaler_is_checkpointed_and_resumed(data, tmp_path):
    path = tmp_path / "amp.pt"
    _, full = _epoch_loss(data, "gaussian", lr=0.1, epochs=2, amp="fp16")
    _epoch_loss(data, "gaussian", lr=0.1, epochs=1, amp="fp16", checkpoint=str(path))
    assert read_checkpoint(path)["scaler"]["scale"] > 0
    _, resumed = _epoch_loss(data, "gaussian", lr=0.1, epochs=2, amp="fp16", checkpoint=str(path))
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_unknown_precision_is_rejected(data):
    with pytest.raises(ValueError, match="amp"):
        _epoch_loss(data, "gaussian", amp="fp8")
