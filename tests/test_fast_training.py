"""The fast training path (mixed precision, channels_last, fused SGD, torch.compile) against plain fp32.

With ``lr=0`` the weights never move, so an epoch's mean loss is the mean of the method's
loss over fixed inputs and fixed noises (the noise generator is seeded per epoch and the
fast options do not touch it): the fast and plain paths must agree within the rounding of
the precision used.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import TrainBatch
from catrs_plugin.methods.catrs import worst_case_noise
from catrs_plugin.methods.smoothadv import smoothadv_attack
from catrs_plugin.methods.smoothed import input_gradient
from catrs_plugin.methods.smoothmix import smoothmix_attack
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, fast_config, make_optimizer, train

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

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


def _epoch_loss(data, method, lr=0.0, epochs=1, checkpoint=None, start=None, device="cpu", **options):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits").to(device)
    if start is not None:
        model.load_state_dict(start)
    registry_method = get_registry().method(method)
    hyperparameters = registry_method.hyperparameters(0.25, "paper") if registry_method.presets.get("paper") else {}
    if method == "catrs":
        hyperparameters = registry_method.hyperparameters(num_steps=2)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=lr, progress=False, checkpoint=checkpoint, **options)
    history = train(model, registry_method, hyperparameters, 0.25, data, config)
    return history[-1]["loss"], model


METHODS = sorted(get_registry().methods)


@pytest.mark.parametrize("method", METHODS)
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


#: Measured |bf16 - fp32| / fp32 of the epoch loss below: 1e-3 to 4e-3, and 3.4e-2 for SmoothMix,
#: whose mixup term is switched on per example by an argmax and whose attack follows normalised
#: gradients, so that rounding can move a whole term.
BF16_TOLERANCE = {"smoothmix": 5e-2}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_computes_the_same_loss_in_bf16(data, weights, method):
    plain, _ = _epoch_loss(data, method, start=weights)
    fast, _ = _epoch_loss(data, method, start=weights, amp="bf16", channels_last=True)
    assert fast != plain
    assert fast == pytest.approx(plain, rel=BF16_TOLERANCE.get(method, 1e-2))


def test_fast_config_turns_everything_on():
    config = TrainConfig(epochs=3, lr=0.05)
    cpu, cuda = fast_config(config, "cpu"), fast_config(config, "cuda")
    assert (cpu.amp, cpu.channels_last, cpu.fused, cpu.compile) == ("bf16", True, None, "default")
    assert (cuda.amp, cuda.channels_last, cuda.fused, cuda.compile) == ("bf16", True, True, "reduce-overhead")
    assert (cuda.epochs, cuda.lr) == (3, 0.05) and config.compile is None
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="fastest").validate()


def test_smoothadv_steps_randomly_where_the_gradient_is_zero():
    """The random direction for a zero gradient is chosen without asking the device whether there is one."""

    class FlatForSecond(nn.Module):  # logits do not depend on the second example's input
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 2))

        def forward(self, x):
            x = x.flatten(1)
            return x * torch.tensor([[1.0], [0.0]]).repeat(len(x) // 2, 1) @ self.w

    x = torch.full((2, 4), 0.5)
    noises = torch.zeros((1, 2, 4))
    points = smoothadv_attack(FlatForSecond(), x, torch.tensor([0, 1]), noises, 0.3, 1, torch.Generator().manual_seed(0))
    moved = (points - x).norm(dim=1)
    torch.testing.assert_close(moved, torch.full((2,), 0.3), rtol=1e-5, atol=1e-6)  # both moved by the full radius
    again = smoothadv_attack(FlatForSecond(), x, torch.tensor([0, 1]), noises, 0.3, 1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(points, again)


SEARCHES = {
    "catrs": lambda model, x, y, soft, noises: worst_case_noise(model, x, soft, noises, 1.0, 4) - noises,
    "smoothadv": lambda model, x, y, soft, noises: smoothadv_attack(model, x, y, noises, 1.0, 4,
                                                                    torch.Generator().manual_seed(3)) - x,
    "smoothmix": lambda model, x, y, soft, noises: smoothmix_attack(model, x, y, noises, step_size=0.5, num_steps=4,
                                                                    mix_step=1, maxnorm_s=None)[1] - x,
}


@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_searches_under_fp16_autocast_follow_the_fp32_gradient(digits, search):
    """With a last layer of weights near 1e-5 the input gradients are near 1e-7: unscaled, float16's backward
    flushed a third of them to zero and the steps turned up to 35 degrees away (SmoothAdv: stepped randomly)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[3].weight.mul_(1e-5)
    x, y = torch.as_tensor(digits[2][:6]), torch.as_tensor(digits[3][:6])
    generator = torch.Generator().manual_seed(1)
    noises = torch.randn((2, *x.shape), generator=generator) * 0.25
    soft = torch.softmax(torch.randn(6, 10, generator=generator), dim=1)
    plain = SEARCHES[search](model, x, y, soft, noises).flatten(1)
    with torch.autocast("cpu", dtype=torch.float16):
        half = SEARCHES[search](model, x, y, soft, noises).flatten(1)
    assert not torch.equal(half, plain)  # the forward pass did run in float16
    assert F.cosine_similarity(half, plain, dim=1).min() > 0.999  # measured: 0.9996 or more


def test_a_search_gradient_that_overflows_is_rescaled():
    """A gradient beyond float16's range at the first scales is recomputed at smaller ones (GradScaler's backoff)."""
    point = torch.full((3,), 2.0)
    scales = []

    def loss_of(p):  # the float16 gradient is 2 * scale: inf at 2**16 and 2**15, 32768 at 2**14
        scales.append(1)
        return p.half().float().sum() * 2.0

    with torch.autocast("cpu", dtype=torch.float16):
        gradient = input_gradient(loss_of, point)
    assert len(scales) == 3 and gradient.tolist() == [2.0] * 3
    assert input_gradient(lambda p: p.pow(3).sum(), point).tolist() == [12.0] * 3  # fp32: no scaling


@pytest.mark.compile
@pytest.mark.parametrize("method", ["gaussian", "catrs"])
def test_compiled_training_computes_the_same_loss(data, weights, method):
    plain, _ = _epoch_loss(data, method, start=weights, device=DEVICE)
    compiled, _ = _epoch_loss(data, method, start=weights, device=DEVICE, compile="default")
    assert compiled == pytest.approx(plain, rel=1e-4)
    options = fast_config(TrainConfig(), DEVICE)
    fast, _ = _epoch_loss(data, method, start=weights, device=DEVICE, amp=options.amp,
                          channels_last=options.channels_last, fused=options.fused, compile=options.compile)
    assert fast == pytest.approx(plain, rel=1e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_no_step_waits_for_the_gpu(data, method):
    """Every method's step (loss, backward, fused SGD) and the batches of on-device data run without a host sync."""
    model = get_registry().create_model("digits_cnn", "digits").cuda()
    registry_method = get_registry().method(method)
    hyperparameters = registry_method.hyperparameters(0.25, "paper") if registry_method.presets.get("paper") else {}
    optimizer = make_optimizer(model, TrainConfig(fused=True))
    on_device = data.to(torch.device("cuda"))
    generator = torch.Generator(device="cuda").manual_seed(0)
    for step in range(3):  # the first step initialises the optimizer state and cuDNN outside the check
        torch.cuda.set_sync_debug_mode("error" if step else "default")
        try:
            for x, y, soft in on_device.batches(step, 32, 0, torch.device("cuda")):
                batch = TrainBatch(x, y, soft, 0.25, generator, epoch=30)
                loss = registry_method.compute_loss(model, batch, hyperparameters)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.compile
def test_cuda_graphs_train_a_batch_norm_network_as_eager_fp32_does(digits, monkeypatch):
    """A CAT-RS step of ``cifar_resnet20`` (batch norm) compiled in ``"reduce-overhead"`` mode, i.e.
    under CUDA graphs: the compiled model runs twice in train mode (its batch-norm buffers
    updated in place) around the eval-mode worst-case search before one backward. Two epochs of
    four steps at learning rate 0.01 must give the eager fp32 losses and weights, with no CUDA
    graph skipped; TF32 is off, so that both sides compute in fp32.

    Two choices keep rounding from being amplified into a different computation: the network
    is briefly trained first (an untrained network's search follows gradient directions that
    rounding alone decides), and ``confidence_mask`` takes ``p_hat`` from the soft labels, not
    from argmaxes (an argmax that rounding flips changes K, and with it every random draw after
    it). Measured on the CPU with ``compile="default"`` (no GPU at hand): losses within 1.1e-6
    and every weight's change within 0.13 % of the eager change (7 % with argmaxes, 10 % to 35 %
    untrained); a stale or overwritten CUDA-graph output would move them by their whole size.
    """
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = torch.nn.functional.interpolate(torch.from_numpy(digits[0][:512]), size=(32, 32), mode="bilinear")
    x, y = x.repeat(1, 3, 1, 1).clamp(0, 1).numpy(), digits[1][:512]
    torch.manual_seed(0)
    model = get_registry().create_model("cifar_resnet20", "cifar10").cuda()
    train(model, get_registry().method("gaussian"), {}, 0.25, TensorData(x, y),
          TrainConfig(epochs=6, batch_size=64, lr=0.1, progress=False))
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    soft = np.random.default_rng(0).dirichlet(np.ones(10), size=32).astype(np.float32)
    data, method = TensorData(x[:32], y[:32], soft), get_registry().method("catrs")
    hyperparameters = method.hyperparameters(num_noise_vec=2, num_steps=2, lbd=1.0, confidence_mask=True)

    def run(compile):
        model.load_state_dict(start)
        config = TrainConfig(epochs=2, batch_size=16, lr=0.01, progress=False, compile=compile)
        losses = [epoch["loss"] for epoch in train(model, method, hyperparameters, 0.25, data, config)]
        return losses, {name: tensor.clone() for name, tensor in model.state_dict().items()}

    eager, eager_weights = run(None)
    skipped = counters["inductor"]["cudagraph_skips"]
    graphed, graphed_weights = run("reduce-overhead")
    assert counters["inductor"]["cudagraph_skips"] == skipped, "Inductor skipped CUDA graphs (see its perf hints)"
    assert graphed == pytest.approx(eager, rel=1e-4)
    for name, expected in eager_weights.items():
        if expected.is_floating_point():
            change = (expected - start[name]).norm()
            assert (graphed_weights[name] - expected).norm() <= 0.02 * change + 1e-6, name
