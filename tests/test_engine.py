"""The batched certification engine against a straightforward per-example, per-block loop.

The reference below is what the noise-stream definition says, written as plainly as possible:
for each example and phase, a generator seeded with ``derive_seed(PHASE_DOMAINS[phase], seed, index)`` draws
blocks of ``NOISE_BLOCK`` samples (a partial last block is sliced from a full one), each
block is classified on its own, and the predictions are counted on the host.
"""

import gc
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from catrs_plugin.backbones.cifar_resnet import cifar_resnet20
from catrs_plugin.certify import fast_inference
from catrs_plugin.certify.fast_inference import (
    PAD_STEPS,
    CompiledForward,
    Recipe,
    fold_batchnorm,
    padded_size,
    prepare_forward,
)
from catrs_plugin.certify.smoothing import (
    AUTO_BATCH_BLOCKS,
    CPU_AUTO_BATCH,
    Smooth,
    auto_batch_size,
)
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound
from catrs_plugin.certify.streams import ESTIMATION, NOISE_BLOCK, PHASE_DOMAINS, SELECTION
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.utils.streams import derive_seed

SIGMA, SEED, CLASSES = 0.5, 3, 10
PLAN = {SELECTION: 130, ESTIMATION: 1234}  # neither a multiple of the block


def reference_counts(model, x, plan, indices, sigma=SIGMA, seed=SEED, device="cpu"):
    counts = np.zeros((len(x), len(plan), CLASSES), dtype=np.int64)
    inputs = torch.as_tensor(x, device=device)
    with torch.no_grad():
        for row, index in enumerate(indices):
            for column, (phase, n) in enumerate(plan.items()):
                generator = torch.Generator(device=device).manual_seed(derive_seed(PHASE_DOMAINS[phase], seed, index))
                for start in range(0, n, NOISE_BLOCK):
                    noise = torch.randn((NOISE_BLOCK, *inputs.shape[1:]), generator=generator, device=device)
                    noisy = inputs[row] + noise[: min(NOISE_BLOCK, n - start)] * sigma
                    predictions = model(noisy).argmax(1).cpu().numpy()
                    counts[row, column] += np.bincount(predictions, minlength=CLASSES)
    return counts


@pytest.fixture(scope="module")
def setup():
    from catrs_adapters.datasets import load_digits

    torch.manual_seed(2)  # an untrained network whose noisy predictions spread over several classes
    model = get_registry().create_model("digits_cnn", "digits").eval()
    x = load_digits("test")[0][:12]
    indices = np.arange(100, 112)
    return model, x, indices, reference_counts(model, x, PLAN, indices)


@pytest.mark.parametrize("batch_size", [37, 100, 250, 999, 4096])
def test_counts_equal_the_reference_for_any_batch_size(setup, batch_size):
    model, x, indices, expected = setup
    counts = Smooth(model, CLASSES, SIGMA, batch_size=batch_size, seed=SEED).sample_counts(x, PLAN, indices)
    assert counts.sum(axis=2).tolist() == [[130, 1234]] * len(x)
    assert (expected[:, 1] > 0).sum(axis=1).min() >= 3  # predictions spread: any change in the noise shows
    np.testing.assert_array_equal(counts, expected)


def test_counts_do_not_depend_on_grouping_or_order(setup):
    model, x, indices, expected = setup
    smooth = Smooth(model, CLASSES, SIGMA, batch_size=512, seed=SEED)
    one_by_one = np.concatenate([smooth.sample_counts(x[i : i + 1], PLAN, indices[i : i + 1]) for i in range(len(x))])
    order = np.random.default_rng(0).permutation(len(x))
    shuffled = smooth.sample_counts(x[order], PLAN, indices[order])
    np.testing.assert_array_equal(one_by_one, expected)
    np.testing.assert_array_equal(shuffled, expected[order])


def test_certify_is_cohen_certify_on_the_reference_counts(setup):
    model, x, indices, expected = setup
    predictions, radii = Smooth(model, CLASSES, SIGMA, batch_size=700, seed=SEED).certify(x, 130, 1234, 0.001, indices)
    selected = expected[:, 0].argmax(axis=1)
    p_lower = lower_confidence_bound(expected[np.arange(len(x)), 1, selected], 1234, 0.001)
    np.testing.assert_array_equal(predictions, np.where(p_lower < 0.5, -1, selected))
    np.testing.assert_array_equal(radii, np.where(p_lower < 0.5, 0.0, certified_radius(p_lower, SIGMA)))


class RunsOutOfMemory(nn.Module):
    """Wraps a model and raises the CUDA out-of-memory error for batches above ``limit``."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.sizes = model, limit, []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"fake: {len(x)} samples do not fit")
        return self.model(x)


def test_out_of_memory_halves_the_batch_and_keeps_the_results(setup):
    model, x, indices, expected = setup
    flaky = RunsOutOfMemory(model, limit=300)
    smooth = Smooth(flaky, CLASSES, SIGMA, batch_size=1000, seed=SEED)
    with pytest.warns(RuntimeWarning) as record:
        counts = smooth.sample_counts(x, PLAN, indices)
    assert [str(w.message).split("retrying with ")[1][:3] for w in record] == ["500", "250"]
    np.testing.assert_array_equal(counts, expected)
    assert flaky.sizes[:4] == [1000, 500, 250, 250] and max(flaky.sizes[4:]) <= 250


def test_out_of_memory_on_a_single_sample_is_raised(setup):
    model, x, indices, _ = setup
    smooth = Smooth(RunsOutOfMemory(model, limit=0), CLASSES, SIGMA, batch_size=8, seed=SEED)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.OutOfMemoryError):
        smooth.sample_counts(x[:1], {ESTIMATION: 10}, indices[:1])


def test_auto_batch_size_off_cuda_and_bad_values(setup):
    model, x, indices, expected = setup
    smooth = Smooth(model, CLASSES, SIGMA, batch_size="auto", seed=SEED)
    assert smooth.resolve_batch_size((1, 8, 8)) == CPU_AUTO_BATCH
    np.testing.assert_array_equal(smooth.sample_counts(x[:3], PLAN, indices[:3]), expected[:3])
    for bad in ("big", 0, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            Smooth(model, CLASSES, SIGMA, batch_size=bad)
    with pytest.raises(ValueError, match="autocast_dtype"):
        Smooth(model, CLASSES, SIGMA, autocast_dtype=torch.float64)


def _total_variation(a, b):
    return np.abs(a - b).sum(axis=-1).max() / (2 * a.sum(axis=-1).max())


def test_reduced_precision_and_channels_last_stay_close(setup):
    """bf16 autocast and channels_last change rounding, not the noise: counts stay close."""
    model, x, indices, expected = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED, channels_last=True, autocast_dtype=torch.bfloat16)
    counts = fast.sample_counts(x, PLAN, indices)
    assert fast._forward.net[1][0].weight.is_contiguous(memory_format=torch.channels_last)  # the engine's copy
    assert model[1][0].weight.is_contiguous()  # the caller's model is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert counts.sum(axis=2).tolist() == [[130, 1234]] * len(x)
    assert _total_variation(counts, expected) < 0.05


@pytest.mark.parametrize(
    "per_sample,free",
    [(1.0, 80e9), (30.0, 80e9), (3e3, 80e9), (1.7e5, 80e9), (2e7, 80e9), (7e5, 8e9), (1e9, 1e9), (0.0, 0.0)],
)
def test_auto_batch_size_is_whole_noise_blocks_within_the_bounds(per_sample, free):
    """The issue's H100 run picked 16,384 (the old upper bound): any measurement now gives whole blocks."""
    size = auto_batch_size(per_sample, free)
    low, high = AUTO_BATCH_BLOCKS
    assert size % NOISE_BLOCK == 0 and low * NOISE_BLOCK <= size <= high * NOISE_BLOCK
    fitting = free / 2 / max(per_sample, 1.0)
    assert size <= max(fitting, low * NOISE_BLOCK)
    assert size == high * NOISE_BLOCK or size > fitting - NOISE_BLOCK or size == low * NOISE_BLOCK


def test_auto_batch_size_on_cuda_uses_the_memory_probe(setup, monkeypatch):
    """On CUDA, "auto" turns the probe's measurement into whole blocks (the probe faked on the CPU)."""
    model, x, indices, expected = setup
    smooth = Smooth(model, CLASSES, SIGMA, batch_size="auto", seed=SEED)
    monkeypatch.setattr(smooth, "device", torch.device("cuda"))
    monkeypatch.setattr(smooth, "_memory_probe", lambda shape: (2_000.0, 80e9))  # an H100 and a tiny model
    assert smooth.resolve_batch_size((1, 8, 8)) == AUTO_BATCH_BLOCKS[1] * NOISE_BLOCK
    monkeypatch.setattr(smooth, "device", torch.device("cpu"))
    np.testing.assert_array_equal(smooth.sample_counts(x[:2], PLAN, indices[:2]), expected[:2])


def _batch_norm_model():
    torch.manual_seed(0)
    net = cifar_resnet20(num_classes=10)
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():  # trained-looking statistics, so that a wrong fold shows in the logits
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.2, generator=generator)
    return nn.Sequential(get_registry().create_model("cifar_resnet20", "cifar10")[0], net)


def test_fold_batchnorm_computes_the_same_logits_on_a_copy():
    model = _batch_norm_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21 and model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    x = torch.rand(8, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_keeps_shared_and_untraceable_modules():
    class Shared(nn.Module):  # one batch norm after two convolutions: folding it into one would change the other
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.a(x)) + self.bn(self.b(x))

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent: torch.fx cannot trace it

    x = torch.rand(2, 1, 6, 6)
    for model in (Shared(), Untraceable()):
        model.bn.running_mean.fill_(0.3)
        folded = fold_batchnorm(model)
        assert any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        with torch.inference_mode():
            torch.testing.assert_close(folded(x), model.eval()(x))


def test_prepared_copies_are_cached_per_model_and_rebuilt_when_weights_change():
    cached = len(fast_inference._CACHE)
    model = _batch_norm_model().eval()
    recipe = Recipe(channels_last=True, fold_batchnorm=True)
    first = prepare_forward(model, recipe, torch.device("cpu"))
    assert prepare_forward(model, recipe, torch.device("cpu")) is first
    assert prepare_forward(model, Recipe(fold_batchnorm=True), torch.device("cpu")) is not first
    with torch.no_grad():
        model[1].fc.bias.add_(1.0)  # an optimizer step or load_state_dict modifies weights in place
    rebuilt = prepare_forward(model, recipe, torch.device("cpu"))
    assert rebuilt is not first
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-4, atol=1e-4)
    assert prepare_forward(model, Recipe(), torch.device("cpu")) is model  # the exact path: the model itself
    assert len(fast_inference._CACHE) == cached + 1
    del model, first, rebuilt
    gc.collect()
    assert len(fast_inference._CACHE) == cached  # the copies went with their model


def test_a_change_through_data_reaches_the_prepared_copy_and_a_kept_smooth():
    """``.data`` writes do not bump a parameter's version counter; the content fingerprint sees them."""
    model = _batch_norm_model().eval()
    recipe = Recipe(channels_last=True, fold_batchnorm=True)
    x = torch.rand(2, 3, 32, 32)
    smooth = Smooth(model, CLASSES, SIGMA, batch_size=100, channels_last=True)
    before = smooth.sample_counts(x, {ESTIMATION: 100})
    first = prepare_forward(model, recipe, torch.device("cpu"))
    version = model[1].fc.weight._version
    model[1].fc.weight.data.mul_(-1.0)  # as user code and ART's code paths do
    model[1].layer1[0].bn1.running_mean.data[3] += 0.5
    assert model[1].fc.weight._version == version
    rebuilt = prepare_forward(model, recipe, torch.device("cpu"))
    assert rebuilt is not first
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-4, atol=1e-4)
    after = smooth.sample_counts(x, {ESTIMATION: 100})  # the Smooth made before the change
    exact = Smooth(model, CLASSES, SIGMA, batch_size=100).sample_counts(x, {ESTIMATION: 100})
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, exact, atol=2)  # channels_last may round a sample or two differently
    assert prepare_forward(model, recipe, torch.device("cpu")) is rebuilt  # unchanged weights: the cached copy


def test_the_weights_fingerprint_sees_every_single_change_and_swaps():
    tensor = torch.zeros(3, 5)
    module = nn.Module()
    module.register_buffer("w", tensor)
    seen = {fast_inference.weights_fingerprint(module)}
    for index in range(tensor.numel()):
        for value in (1e-45, -0.0, 1.0):  # the smallest subnormal and a sign bit count too
            tensor.view(-1)[index] = value
            seen.add(fast_inference.weights_fingerprint(module))
            tensor.view(-1)[index] = 0.0
    assert len(seen) == 1 + 3 * tensor.numel()
    tensor.copy_(torch.arange(15.0).view(3, 5))
    ordered = fast_inference.weights_fingerprint(module)
    tensor.view(-1)[[2, 9]] = tensor.view(-1)[[9, 2]]
    assert fast_inference.weights_fingerprint(module) != ordered
    halves = nn.Module()
    halves.register_buffer("h", torch.ones(4, dtype=torch.float16))
    halves.register_buffer("b", torch.ones(4, dtype=torch.bool))
    halves.register_buffer("i", torch.arange(4))
    assert fast_inference.weights_fingerprint(halves) == fast_inference.weights_fingerprint(halves)


def test_padded_sizes_are_few_and_cover_the_batch():
    for full in (1, 37, 100, 1000, 16_000):
        sizes = {padded_size(size, full) for size in range(1, full + 1)}
        assert len(sizes) <= PAD_STEPS and max(sizes) == full
        assert all(padded_size(size, full) >= size for size in range(1, full + 1))


class RecordsShapes(CompiledForward):
    """A "compiled" forward pass (fixed shapes) that runs the model eagerly and records the batch sizes it sees."""

    def __init__(self, model):
        self.eager, self.compiled, self.compile_seconds, self.failed, self.sizes = model, self.record, {}, None, []
        self.name = "recorded"

    def record(self, x):
        self.sizes.append(len(x))
        return self.eager(x)


def test_fixed_shapes_pad_partial_batches_and_keep_the_counts(setup):
    model, x, indices, expected = setup
    smooth = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED)
    smooth._forward = recorder = RecordsShapes(model)
    np.testing.assert_array_equal(smooth.sample_counts(x, PLAN, indices), expected)
    assert set(recorder.sizes) <= {padded_size(size, 1000) for size in range(1, 1001)}
    assert recorder.sizes[-1] == padded_size(len(x) * 1364 % 1000, 1000) > len(x) * 1364 % 1000


def test_failed_compilation_falls_back_to_the_prepared_copy(setup, monkeypatch):
    model, x, indices, expected = setup

    def broken_compile(module, **options):
        def run(batch):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    smooth = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED, compile_mode="default")
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        counts = smooth.sample_counts(x, PLAN, indices)
    np.testing.assert_array_equal(counts, expected)  # the copy without compilation computes exactly the same
    with pytest.raises(ValueError, match="either fast=True or compile_mode"):
        Smooth(model, CLASSES, SIGMA, fast=True, compile_mode="default")


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                                 reason="torch.compile on the CPU needs a C++ compiler")),
    pytest.param("cuda", marks=pytest.mark.cuda),  # with Inductor's CUDA graphs
])
def test_fast_path_compiles_once_and_stays_close(setup, caplog, device):
    """``fast=True``: one compilation per shape and process, shared by later Smooth objects."""
    model, x, indices, expected = setup
    model = get_registry().create_model("digits_cnn", "digits").to(device).eval()
    model.load_state_dict(setup[0].state_dict())
    plan = {SELECTION: 100, ESTIMATION: 900}  # 1000 samples per example: every batch is full, one shape
    with caplog.at_level("INFO", logger="catrs_plugin.certify.fast_inference"):
        fast = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED, fast=True)
        counts = fast.sample_counts(x, plan, indices)
    assert isinstance(fast._forward, CompiledForward) and fast._forward.failed is None
    assert list(fast._forward.compile_seconds) == [(1000, 1, 8, 8)]
    assert "compiled" in caplog.text and "(1000, 1, 8, 8)" in caplog.text
    again = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED, fast=True)
    np.testing.assert_array_equal(again.sample_counts(x, plan, indices), counts)  # no recompilation, same numbers
    assert again._forward is fast._forward and len(fast._forward.compile_seconds) == 1
    exact = Smooth(model, CLASSES, SIGMA, batch_size=1000, seed=SEED).sample_counts(x, plan, indices)
    assert counts.sum(axis=2).tolist() == [[100, 900]] * len(x)
    assert _total_variation(counts, exact) < 0.05
    assert model[1][0].weight.is_contiguous() and isinstance(model[1][0], nn.Conv2d)


@pytest.mark.cuda
def test_cuda_engine_equals_the_cuda_reference(setup):
    model, x, indices, _ = setup
    gpu = get_registry().create_model("digits_cnn", "digits").cuda().eval()
    gpu.load_state_dict(model.state_dict())
    expected = reference_counts(gpu, x, PLAN, indices, device="cuda")
    smooth = Smooth(gpu, CLASSES, SIGMA, batch_size="auto", seed=SEED)
    np.testing.assert_array_equal(smooth.sample_counts(x, PLAN, indices), expected)
    size = smooth.resolve_batch_size((1, 8, 8))
    assert size % NOISE_BLOCK == 0 and size >= NOISE_BLOCK


# ----------------------------------------------------------------------------- the fast path's one argument


def _without_compilation(monkeypatch):
    """torch.compile as the identity: the plumbing of ``fast`` is checked without paying for Inductor."""
    monkeypatch.setattr(torch, "compile", lambda module, **options: module)


def test_catrs_certify_fast_flag(tmp_path, monkeypatch):
    from catrs_plugin.cli import main
    from catrs_plugin.results.tsv import read_certify_results

    _without_compilation(monkeypatch)
    checkpoint = tmp_path / "gaussian.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "64", "--checkpoint", str(checkpoint), "--quiet", "--device", "cpu"]) == 0
    command = ["certify", "digits", str(checkpoint), "0.25", None, "--N0", "50", "--N", "500", "--max", "8",
               "--quiet", "--device", "cpu"]
    exact, fast = tmp_path / "exact.tsv", tmp_path / "fast.tsv"
    assert main([*command[:4], str(exact), *command[5:]]) == 0
    assert main([*command[:4], str(fast), *command[5:], "--fast"]) == 0
    a, b = read_certify_results(exact), read_certify_results(fast)
    assert list(a.idx) == list(b.idx) == list(range(8))
    assert (a.predict == b.predict).mean() >= 0.75 and np.abs(a.radius - b.radius).max() < 0.2
    assert main([*command[:4], str(tmp_path / "x.tsv"), *command[5:], "--fast", "--compile", "default"]) == 2


def test_fast_reaches_compare_and_the_art_estimator(monkeypatch):
    from catrs_adapters.art.estimator import PyTorchCATRS
    from catrs_plugin.cli import main
    from catrs_plugin.compare import run as compare_run  # what `catrs compare` calls, imported when it runs

    seen = {}
    monkeypatch.setattr(compare_run, "run_comparison", lambda *args, **kwargs: seen.update(kwargs) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["compare", "--dataset", "digits", "--methods", "gaussian", "--sigma", "0.25", "--fast"])
    assert seen["fast"] is True
    model = get_registry().create_model("digits_cnn", "digits")
    estimator = PyTorchCATRS(model, nn.CrossEntropyLoss(), (1, 8, 8), 10, device_type="cpu", scale=0.25, fast=True)
    smooth = estimator.smooth(batch_size=100)
    assert smooth.fast and smooth.recipe.fold_batchnorm and smooth.recipe.autocast_dtype == torch.bfloat16
    again = estimator.smooth(batch_size=100)
    assert again.base_classifier is smooth.base_classifier  # one module per estimator: compiled once, not per call
    exact = PyTorchCATRS(model, nn.CrossEntropyLoss(), (1, 8, 8), 10, device_type="cpu", scale=0.25)
    for mode in (True, False, True):  # the reused module restores the mode the caller set, not the first one
        model.train(mode)
        exact.predict(np.zeros((1, 1, 8, 8), np.float32), batch_size=100)
        assert model.training is mode
