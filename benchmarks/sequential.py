"""Sequential CERTIFY against exact CERTIFY: samples per image, wall time, certified accuracy per radius.

Two sub-commands:

``model``
    Train a model here (once, into ``--trained-dir``; Gaussian augmentation at sigma 0.25, see
    ``benchmarks/_common.py``): ``--trained digits`` (the digits CNN on the embedded 8x8 digits)
    or ``--trained digits32`` (a CIFAR ResNet-20 on the digits upsampled to 3 x 32 x 32). Then
    certify the same test images on the same noise streams with ``Smooth.certify`` and
    ``Smooth.certify_sequential`` (with the labels: the label-aware exit), taking turns on
    ``--chunks`` chunks of the images so that a shared machine's load falls on both alike, and
    print, for both, the mean samples per image (N0 included), the wall time and the certified
    accuracy at every radius of the grid, with the number of images whose decision at a radius
    differs::

        python benchmarks/sequential.py model --trained digits --images 120 --n 10000

``replay``
    The per-image results released with CAT-RS (CIFAR-10, ResNet-110, N0 = 100, N = 100,000,
    alpha = 0.001; ``tests/data/catrs-official-certify``) through the procedure's decision rule:
    each image's count of ``cA`` among the N estimation samples is the one whose Clopper-Pearson
    radius is nearest to the published radius, its ``pA`` that count over N; the estimation
    samples are drawn as Binomial block counts at that ``pA``, and the same draws give the
    replayed exact CERTIFY (their sum over all N) and sequential CERTIFY (their prefix up to the
    stop). Rows whose class is wrong stop after the selection (their published class is the
    selected one). Abstentions do not say their ``pA``: they are replayed at the hardest value
    consistent with the row (the largest count that still abstains), which costs nearly the whole
    budget, and the savings are also given as if they cost nothing: the truth lies between::

        python benchmarks/sequential.py replay --repeats 3
        python benchmarks/sequential.py replay --repeats 3 --shares 0.1,0.2,0.35,0.5,0.8   # SEQUENCE_SHARE

Figures measured with these commands are in docs/benchmarks.rst ("Sequential certification").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TRAINED, describe_device, load_inputs, trained_checkpoint  # noqa: E402

from catrs_plugin.certify.sequential import (  # noqa: E402
    DEFAULT_RADII,
    SEQUENCE_SHARE,
    SequentialResult,
    StoppingRule,
    simulate,
)
from catrs_plugin.certify.smoothing import Smooth  # noqa: E402
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound  # noqa: E402
from catrs_plugin.results.tsv import read_certify_results  # noqa: E402
from catrs_plugin.train.checkpoint import load_checkpoint  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "catrs-official-certify" / "cifar10" / "cat-rs"
PAPER = {"n0": 100, "n": 100_000, "alpha": 0.001}


def accuracy(predictions, radii, labels, grid) -> np.ndarray:
    """Certified accuracy (%) at each radius of ``grid``."""
    correct = predictions == labels
    return np.array([100 * np.mean(correct & (radii >= r)) for r in grid])


def print_table(rows: list[tuple[str, list[str]]], header: list[str]) -> None:
    widths = [max(len(header[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(header))]
    label = max(len(name) for name, _ in rows)
    print(" " * label + "  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for name, cells in rows:
        print(name.ljust(label) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)))


# --- model ------------------------------------------------------------------------------------------


def run_model(options: argparse.Namespace) -> None:
    device = torch.device(options.device)
    torch.set_num_threads(options.threads)
    path, inputs = trained_checkpoint(options.trained, options.trained_dir, device, options.trained_epochs)
    model = load_checkpoint(path, map_location=device).eval()
    x, y = load_inputs(inputs, "test")
    chosen = np.arange(min(options.images, len(x)))
    x, y = x[chosen], y[chosen]
    sigma = options.sigma
    print(f"{options.trained}: {TRAINED[options.trained][0]} ({path.name}), {len(chosen)} test images, sigma {sigma}, "
          f"N0={options.n0} N={options.n} alpha={options.alpha}, batch {options.batch}, seed {options.seed}; "
          f"{describe_device(device)}")

    def engine() -> Smooth:
        return Smooth(model, 10, sigma, batch_size=options.batch, seed=options.seed)

    # The two take turns on chunks of the images, so that a shared machine's changing load falls on both alike;
    # results do not depend on how the images are grouped.
    exact_parts, ours_parts, exact_seconds, ours_seconds = [], [], 0.0, 0.0
    for part in np.array_split(np.arange(len(chosen)), min(options.chunks, len(chosen))):
        began = time.perf_counter()
        exact_parts.append(engine().certify(x[part], options.n0, options.n, options.alpha, chosen[part]))
        exact_seconds += time.perf_counter() - began
        began = time.perf_counter()
        ours_parts.append(engine().certify_sequential(x[part], options.n0, options.n, options.alpha, options.radii,
                                                      options.alpha_sequence, labels=y[part], indices=chosen[part]))
        ours_seconds += time.perf_counter() - began
    exact = tuple(np.concatenate(column) for column in zip(*exact_parts))
    ours = SequentialResult(*(np.concatenate(column) for column in zip(*ours_parts)))
    grid = StoppingRule(sigma, options.n, options.alpha, options.radii, options.alpha_sequence).radii
    exact_accuracy = accuracy(exact[0], exact[1], y, grid)
    ours_accuracy = accuracy(ours.predictions, ours.radii, y, grid)
    flips = [int(np.sum(((exact[0] == y) & (exact[1] >= r)) != ((ours.predictions == y) & (ours.radii >= r))))
             for r in grid]
    header = ["samples/image", "s/image", *(f"{r:g}" for r in grid)]
    per_image = options.n0 + ours.samples.mean()
    print_table([
        ("exact CERTIFY", [f"{options.n0 + options.n:,}", f"{exact_seconds / len(x):.3f}",
                           *(f"{a:.1f}" for a in exact_accuracy)]),
        ("sequential", [f"{per_image:,.0f}", f"{ours_seconds / len(x):.3f}", *(f"{a:.1f}" for a in ours_accuracy)]),
        ("images that differ", ["", "", *(str(f) for f in flips)]),
    ], header)
    print(f"samples: {(options.n0 + options.n) / per_image:.2f}x fewer; wall time: {exact_seconds / ours_seconds:.2f}x "
          f"faster; exits after the selection (wrong class): {int(np.sum(ours.samples == 0))} of {len(x)}; "
          f"largest accuracy difference {np.max(np.abs(ours_accuracy - exact_accuracy)):.1f} points")


# --- replay -----------------------------------------------------------------------------------------


def published_pa(sigma: float, radius: np.ndarray, abstain: np.ndarray) -> np.ndarray:
    """Each row's count of ``cA`` among N = 100,000 (the one whose CERTIFY radius is nearest the published,
    rounded radius; for an abstention the largest count that still abstains), over N."""
    n, alpha = PAPER["n"], PAPER["alpha"]
    counts = np.arange(n // 2, n + 1)
    radii = certified_radius(lower_confidence_bound(counts, n, alpha), sigma)
    right = np.clip(np.searchsorted(radii, radius), 1, len(counts) - 1)
    nearest = np.where(np.abs(radii[right - 1] - radius) <= np.abs(radii[right] - radius), right - 1, right)
    hardest_abstention = counts[np.flatnonzero(lower_confidence_bound(counts, n, alpha) < 0.5)[-1]]
    return np.where(abstain, hardest_abstention, counts[nearest]) / n


def replay_sigma(sigma: float, share: float, repeats: int, radii, seed: int) -> dict:
    results = read_certify_results(REFERENCE / f"noise_{sigma}.tsv")
    abstain = results.predict == -1
    wrong = (results.predict >= 0) & (results.correct == 0)
    estimated = ~wrong
    p = published_pa(sigma, results.radius, abstain)[estimated]
    rule = StoppingRule(sigma, PAPER["n"], PAPER["alpha"], radii, share * PAPER["alpha"])
    sizes = np.diff(rule.checks(), prepend=0)
    correct = results.correct == 1
    published = np.array([100 * np.mean(correct & (results.radius >= r)) for r in rule.radii])
    rng = np.random.default_rng([seed, round(1000 * sigma), round(1000 * share)])  # the same draws in any sweep
    exact_runs, ours_runs, samples_runs = [], [], []
    for _ in range(repeats):
        outcomes = rng.binomial(sizes, p[:, None]).astype(np.int32)
        bound, samples = simulate(rule, outcomes)
        exact_bound = lower_confidence_bound(outcomes.sum(axis=1), PAPER["n"], PAPER["alpha"])
        for runs, values in ((exact_runs, exact_bound), (ours_runs, bound)):
            radius = np.zeros(len(results))
            radius[estimated] = np.where(values >= 0.5, certified_radius(values, sigma), -1.0)
            runs.append([100 * np.mean(correct & (radius >= r)) for r in rule.radii])
        every = np.zeros(len(results))
        every[estimated] = samples
        samples_runs.append(every)
    samples = np.mean(samples_runs, axis=0)
    return {"sigma": sigma, "share": share, "radii": rule.radii, "published": published,
            "exact": np.mean(exact_runs, axis=0), "sequential": np.mean(ours_runs, axis=0),
            "samples": PAPER["n0"] + samples.mean(), "samples_free_abstentions": PAPER["n0"] + samples[~abstain].sum()
            / len(results), "abstain": abstain.mean(), "wrong": wrong.mean()}


def run_replay(options: argparse.Namespace) -> None:
    exact = PAPER["n0"] + PAPER["n"]
    print(f"CAT-RS, CIFAR-10, ResNet-110, 10,000 test images per sigma; N0={PAPER['n0']} N={PAPER['n']:,} "
          f"alpha={PAPER['alpha']}; {options.repeats} replay(s) of the estimation samples (seed {options.seed})")
    for sigma in options.sigmas:
        for share in options.shares:
            result = replay_sigma(sigma, share, options.repeats, options.radii, options.seed)
            header = [f"{r:g}" for r in result["radii"]]
            print(f"\nsigma {sigma:g}, alpha_sequence = {share:g} x alpha: mean samples per image "
                  f"{result['samples']:,.0f} ({exact / result['samples']:.2f}x fewer than {exact:,}); "
                  f"{result['samples_free_abstentions']:,.0f} ({exact / result['samples_free_abstentions']:.2f}x) "
                  f"if the {100 * result['abstain']:.1f} % abstentions cost nothing; "
                  f"{100 * result['wrong']:.1f} % wrong-class rows stop after the selection")
            print_table([
                ("published CERTIFY", [f"{a:.2f}" for a in result["published"]]),
                ("replayed CERTIFY", [f"{a:.2f}" for a in result["exact"]]),
                ("replayed sequential", [f"{a:.2f}" for a in result["sequential"]]),
                ("sequential - published", [f"{a:+.2f}" for a in result["sequential"] - result["published"]]),
                ("sequential - replayed", [f"{a:+.2f}" for a in result["sequential"] - result["exact"]]),
            ], header)


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="exact against sequential CERTIFY on a model trained here")
    model.add_argument("--trained", choices=sorted(TRAINED), default="digits")
    model.add_argument("--trained-dir", default="benchmark-models")
    model.add_argument("--trained-epochs", type=int, default=None,
                       help="training epochs (default: _common.TRAINED's: 30 for digits, 15 for digits32)")
    model.add_argument("--images", type=int, default=120, help="first test images to certify (default: 120)")
    model.add_argument("--sigma", type=float, default=0.25, help="certification noise (default: 0.25, as trained)")
    model.add_argument("--n0", type=int, default=100)
    model.add_argument("--n", type=int, default=10_000)
    model.add_argument("--alpha", type=float, default=0.001)
    model.add_argument("--batch", type=int, default=1000)
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--device", default="cpu")
    model.add_argument("--chunks", type=int, default=10,
                       help="the two procedures take turns on this many chunks of the images (default: 10)")
    model.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default: 1; on a shared 2-core machine more threads only compete)")
    replay = commands.add_parser("replay", help="the released CAT-RS results through the decision rule")
    replay.add_argument("--sigmas", type=floats, default=[0.25, 0.5, 1.0])
    replay.add_argument("--shares", type=floats, default=[SEQUENCE_SHARE],
                        help=f"alpha_sequence / alpha values to compare (default: {SEQUENCE_SHARE:g})")
    replay.add_argument("--repeats", type=int, default=1, help="replays averaged (default: 1)")
    replay.add_argument("--seed", type=int, default=0)
    for sub in (model, replay):
        sub.add_argument("--radii", type=floats, default=list(DEFAULT_RADII),
                         help="radii to decide (default: 0 to 2 in steps of 0.25)")
    model.add_argument("--alpha-sequence", type=float, default=None)
    return parser


def main(argv=None) -> None:
    options = build_parser().parse_args(argv)
    (run_model if options.command == "model" else run_replay)(options)


if __name__ == "__main__":
    main()
