"""The batched certification engine against a straightforward per-example, per-block loop.

The reference below is what the noise-stream definition says, written as plainly as possible:
for each example and phase, a generator seeded with ``derive_seed(seed, index, phase)`` draws
blocks of ``NOISE_BLOCK`` samples (a partial last block is sliced from a full one), each
block is classified on its own, and the predictions are counted on the host.
"""

import numpy as np
import pytest
import torch
from torch import nn

from catrs_plugin.registry import get_registry
from catrs_plugin.smoothing import (
    CPU_AUTO_BATCH,
    ESTIMATION,
    NOISE_BLOCK,
    SELECTION,
    Smooth,
    derive_seed,
)
from catrs_plugin.stats import certified_radius, lower_confidence_bound

SIGMA, SEED, CLASSES = 0.5, 3, 10
PLAN = {SELECTION: 130, ESTIMATION: 1234}  # neither a multiple of the block


def reference_counts(model, x, plan, indices, sigma=SIGMA, seed=SEED, device="cpu"):
    counts = np.zeros((len(x), len(plan), CLASSES), dtype=np.int64)
    inputs = torch.as_tensor(x, device=device)
    with torch.no_grad():
        for row, index in enumerate(indices):
            for column, (phase, n) in enumerate(plan.items()):
                generator = torch.Generator(device=device).manual_seed(derive_seed(seed, index, phase))
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
    copy = get_registry().create_model("digits_cnn", "digits")
    copy.load_state_dict(model.state_dict())
    fast = Smooth(copy, CLASSES, SIGMA, batch_size=1000, seed=SEED, channels_last=True, autocast_dtype=torch.bfloat16)
    counts = fast.sample_counts(x, PLAN, indices)
    assert copy[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert copy[1][0].weight.dtype == torch.float32
    assert counts.sum(axis=2).tolist() == [[130, 1234]] * len(x)
    assert _total_variation(counts, expected) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_equals_the_cuda_reference(setup):
    model, x, indices, _ = setup
    gpu = get_registry().create_model("digits_cnn", "digits").cuda().eval()
    gpu.load_state_dict(model.state_dict())
    expected = reference_counts(gpu, x, PLAN, indices, device="cuda")
    smooth = Smooth(gpu, CLASSES, SIGMA, batch_size="auto", seed=SEED)
    np.testing.assert_array_equal(smooth.sample_counts(x, PLAN, indices), expected)
    size = smooth.resolve_batch_size((1, 8, 8))
    assert size % NOISE_BLOCK == 0 and size >= NOISE_BLOCK
