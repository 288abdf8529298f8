"""Side-by-side comparison of training methods (``catrs compare``).

Every method is trained from the same initialisation with the same data order, noise seeds
and budget, then certified on the same examples with the same CERTIFY settings and noise;
CAT-RS's soft labels come from one Gaussian teacher at sigma = 0.25, trained once (at
sigma = 0.25 it *is* the Gaussian run) and cached with its smoothed predictions. Everything is
resumable: a rerun reuses finished checkpoints, soft labels, result rows and adversarial
examples, and only the summary files are rewritten.

Output directory::

    settings.json                      shared settings; a rerun must use the same ones
    teacher/gaussian_noise_0.25.pt     the teacher (also the Gaussian run at sigma = 0.25)
    teacher/soft_labels.npy            its smoothed predictions on the training split
    noise_<sigma>/checkpoints/<method>.pt
    noise_<sigma>/certify/<method>.tsv               Cohen-format CERTIFY rows
    noise_<sigma>/empirical/<method>_eps_<eps>.tsv   PREDICT rows on ART L2-PGD examples (``attack_eps``)
    noise_<sigma>/summary.md, summary.csv, summary.json, certified_accuracy.png
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from catrs_plugin import provenance
from catrs_plugin.atomic import write_atomic
from catrs_plugin.certification import certify_to_file, select_indices
from catrs_plugin.checkpoint import read_checkpoint
from catrs_plugin.methods.base import Method
from catrs_plugin.methods.smoothed import QUICK_EPOCHS
from catrs_plugin.metrics import default_radii, format_radius, summarize
from catrs_plugin.registry import Registry, get_registry
from catrs_plugin.report import render_table
from catrs_plugin.results import CertifyResults, predict_accuracy, read_certify_results
from catrs_plugin.soft_labels import read_soft_labels, soft_labels_to_file
from catrs_plugin.specs import DatasetSpec
from catrs_plugin.training import TensorData, TrainConfig, train
from catrs_plugin.validation import check_alpha, check_positive_int, check_sigma

#: Noise level of the Gaussian teacher whose smoothed predictions are CAT-RS's soft labels.
TEACHER_SIGMA = 0.25

#: Registered attack behind ``attack_eps``: ART's L2 PGD on the smoothed classifier.
ATTACK = "art_l2_pgd"

#: Radius step of the summary's certified-accuracy columns.
RADIUS_STEP = 0.25

#: Noisy samples per forward pass when certifying on the CPU: for small inputs (digits) larger
#: batches than :data:`catrs_plugin.smoothing.CPU_AUTO_BATCH` are several times faster.
CPU_CERTIFY_BATCH = 10_000


@dataclass(frozen=True)
class Budget:
    """Training, soft-label, certification and attack settings shared by every method.

    Attributes
    ----------
    epochs, batch_size, lr, lr_step_size
        SGD training (momentum 0.9, weight decay 1e-4, learning rate x0.1 every ``lr_step_size``).
    soft_samples : int
        Noise samples per training example for the teacher's soft labels.
    n0, n, alpha
        CERTIFY's selection samples, estimation samples and failure probability; PREDICT on
        adversarial examples uses ``n`` and ``alpha`` too.
    skip, max_examples
        Certify test examples ``i`` with ``i % skip == 0`` and ``i < max_examples`` (-1: all).
    attack_steps, attack_samples
        ART L2 PGD iterations, and noise samples per gradient of the smoothed classifier.
    train_examples : int
        Train on the first ``train_examples`` examples of the training split only (-1: all);
        for smoke tests.
    """

    epochs: int
    batch_size: int
    lr: float
    lr_step_size: int
    soft_samples: int
    n0: int
    n: int
    alpha: float
    skip: int = 1
    max_examples: int = -1
    attack_steps: int = 10
    attack_samples: int = 32
    train_examples: int = -1

    def validate(self) -> "Budget":
        """Raise ``ValueError`` naming the first setting out of range; return self."""
        for name in ("epochs", "batch_size", "lr_step_size", "soft_samples", "n0", "n", "skip", "attack_steps",
                     "attack_samples"):
            check_positive_int(getattr(self, name), name)
        check_alpha(self.alpha)
        return self


#: ``paper``: the CIFAR-10 recipe of the CAT-RS paper. ``quick``: minutes on a CPU for small data
#: (the methods' ``quick`` presets scale their epoch schedules to the same length).
BUDGETS = {
    "paper": Budget(epochs=150, batch_size=256, lr=0.1, lr_step_size=50, soft_samples=10_000, n0=100, n=100_000,
                    alpha=0.001),
    "quick": Budget(epochs=QUICK_EPOCHS, batch_size=256, lr=0.1, lr_step_size=QUICK_EPOCHS // 3, soft_samples=1_000,
                    n0=100, n=10_000, alpha=0.001, skip=2),
}


@dataclass
class MethodOutcome:
    """What :func:`run_comparison` did and found for one method."""

    name: str
    summary: dict[str, Any]
    epochs_trained: int = 0
    rows_certified: int = 0
    rows_attacked: int = 0


@dataclass
class Comparison:
    """Result of :func:`run_comparison`: one outcome per method and the files written."""

    directory: Path
    radii: list[float]
    outcomes: list[MethodOutcome] = field(default_factory=list)
    soft_labels_computed: bool = False

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [outcome.summary for outcome in self.outcomes]


def parse_methods(text: str, registry: Registry) -> list[Method]:
    """``all`` (every registered method) or comma-separated names; unknown names list the valid ones."""
    if text.strip() == "all":
        return list(registry.methods.values())
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(
            f"--methods must be 'all' or comma-separated names; valid: {', '.join(sorted(registry.methods))}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--methods names a method twice: {text!r}")
    return [registry.method(name) for name in names]


def parse_floats(text: str, name: str) -> list[float]:
    """Comma-separated positive numbers, e.g. ``--attack-eps 0.25,0.5``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{name} must be comma-separated numbers > 0, got {text!r}")
    return values


def method_hyperparameters(method: Method, sigma: float, preset: str) -> tuple[str | None, dict[str, Any]]:
    """The method's ``preset`` at ``sigma`` if it defines one, else its ``paper`` preset, else its defaults.

    Returns the preset actually used (None for the defaults) and the hyper-parameters.
    """
    for name in (preset, "paper"):
        if sigma in method.presets.get(name, {}):
            return name, method.hyperparameters(sigma, name)
    return None, method.hyperparameters()


def run_comparison(
    dataset: str,
    methods: Sequence[Method],
    sigma: float,
    output: str | os.PathLike,
    preset: str = "quick",
    budget: Budget | None = None,
    *,
    arch: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    certify_batch: int | str | None = None,
    attack_eps: Sequence[float] = (),
    progress: bool = False,
    log: Callable[[str], None] = print,
    fast: bool = False,
) -> Comparison:
    """Train, certify (and optionally attack) every method under identical settings; write the summary.

    Parameters
    ----------
    dataset : str
        Registered dataset (its ``train`` split trains, its ``test`` split is certified).
    methods : sequence of Method
        Methods to compare (see :func:`parse_methods`).
    sigma : float
        Noise level of training and certification.
    output : path
        Output directory (see the module docstring); rerunning with the same one resumes.
    preset : {"paper", "quick"}
        Budget (:data:`BUDGETS`) and method preset; a method without that preset at ``sigma``
        uses its ``paper`` preset, else its defaults.
    budget : Budget, optional
        Overrides the preset's budget (e.g. tiny settings in tests).
    arch : str, optional
        Registered architecture (default: the dataset's).
    data_dir : str, optional
        Where file-based datasets live.
    seed : int
        Seed of initialisation, data order, training noise and certification noise.
    device : torch.device or str
        Where to train and certify.
    certify_batch : int or "auto", optional
        Noisy samples per forward pass in certification (results do not depend on it);
        default: ``"auto"`` on CUDA, :data:`CPU_CERTIFY_BATCH` on the CPU.
    fast : bool
        Certify on the fast path of :class:`~catrs_plugin.smoothing.Smooth` (``fast=True``).
    attack_eps : sequence of float
        L2 radii of ART's PGD attack on the smoothed classifier; the empirical accuracy of each
        method's smoothed classifier (PREDICT on the adversarial example) is reported per radius.
        The attack is the registered :data:`ATTACK` (the adapters register it; it needs ART).
    progress : bool
        Show progress bars.
    log : callable
        Receives one line per step (``print`` by default).
    """
    if preset not in BUDGETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(BUDGETS))}")
    sigma = check_sigma(sigma)
    budget = (budget or BUDGETS[preset]).validate()
    registry = get_registry()
    spec = registry.dataset(dataset)
    arch = arch or spec.default_arch
    registry.model(arch)
    if not methods:
        raise ValueError("methods is empty; pass at least one registered method")
    if attack_eps:
        registry.attack(ATTACK)  # fail before training when no plugin provides the attack
    device = torch.device(device)
    if certify_batch is None:
        certify_batch = "auto" if device.type == "cuda" else CPU_CERTIFY_BATCH
    elif certify_batch != "auto":
        check_positive_int(certify_batch, "certify_batch")
    out = Path(output)
    check_settings(out, {"dataset": dataset, "arch": arch, "preset": preset, "seed": seed,
                         **{f"budget.{key}": value for key, value in asdict(budget).items()}})

    x_train, y_train = spec.load("train", data_dir=data_dir)
    if budget.train_examples >= 0:
        x_train, y_train = x_train[: budget.train_examples], y_train[: budget.train_examples]
    x_test, y_test = spec.load("test", data_dir=data_dir)
    indices = select_indices(len(x_test), budget.skip, budget.max_examples)
    log(f"{dataset}: {len(x_train)} training examples, {len(indices)} certified; sigma={sigma}, preset {preset}, "
        f"{budget.epochs} epochs, N0={budget.n0} N={budget.n} alpha={budget.alpha}, device {device}")
    context = _Context(registry, spec, arch, budget, seed, device, progress, log, x_train, y_train, x_test, y_test,
                       indices, certify_batch, fast)

    comparison = Comparison(out / f"noise_{sigma}", radii=[])
    soft = None
    if any(method.needs_soft_labels for method in methods):
        soft, comparison.soft_labels_computed = teacher_soft_labels(context, out / "teacher")

    certified: dict[str, CertifyResults] = {}
    for method in methods:
        outcome, certified[method.name] = evaluate_method(
            context, method, sigma, preset, soft if method.needs_soft_labels else None,
            checkpoint_path(out, method.name, sigma), comparison.directory, attack_eps,
        )
        comparison.outcomes.append(outcome)

    largest = max(float(np.max(r.radius, initial=0.0)) for r in certified.values())
    comparison.radii = default_radii(max(largest, 0.0), RADIUS_STEP)
    for outcome in comparison.outcomes:
        stats = summarize(certified[outcome.name], comparison.radii)
        outcome.summary.update({
            "n": stats["n"], "acr": stats["acr"], "certified_accuracy": stats["certified_accuracy"],
            "abstain": stats["abstain"], "certify_seconds_per_example": stats["seconds_per_example"],
        })
    write_summary(comparison, certified, dataset, sigma, preset, budget, attack_eps)
    return comparison


@dataclass
class _Context:
    """What every step of one comparison shares."""

    registry: Registry
    spec: DatasetSpec
    arch: str
    budget: Budget
    seed: int
    device: torch.device
    progress: bool
    log: Callable[[str], None]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    indices: np.ndarray
    certify_batch: int | str
    fast: bool = False


def evaluate_method(
    context: _Context, method: Method, sigma: float, preset: str, soft: np.ndarray | None, checkpoint: Path,
    directory: Path, attack_eps: Sequence[float],
) -> tuple[MethodOutcome, CertifyResults]:
    """Train (or reuse) one method, certify it and, for each of ``attack_eps``, attack it; resumable."""
    budget, spec, log = context.budget, context.spec, context.log
    used_preset, hyperparameters = method_hyperparameters(method, sigma, preset)
    log(f"[train] {method.name}: preset {used_preset}, {hyperparameters or '(no hyper-parameters)'}")
    model, history, trained = train_method(context, method, hyperparameters, sigma, soft, checkpoint)
    tsv = directory / "certify" / f"{method.name}.tsv"
    log(f"[certify] {method.name}: {len(context.indices)} examples")
    rows = certify_to_file(model, spec.num_classes, sigma, context.x_test, context.y_test, tsv, context.indices,
                           n0=budget.n0, n=budget.n, alpha=budget.alpha, batch_size=context.certify_batch,
                           seed=context.seed, fast=context.fast, progress=context.progress)
    outcome = MethodOutcome(method.name, {
        "method": method.name,
        "paper": method.paper,
        "preset": used_preset,
        "hyperparameters": hyperparameters,
        "epochs": len(history),
        "train_seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else float("nan"),
        "certify_path": str(tsv),
    }, epochs_trained=trained, rows_certified=rows)
    for eps in attack_eps:
        predictions = directory / "empirical" / f"{method.name}_eps_{eps}.tsv"
        log(f"[attack] {method.name}: ART L2 PGD at eps={eps}, then PREDICT")
        outcome.rows_attacked += get_registry().attack(ATTACK).to_file(
            model, spec.num_classes, spec.input_shape, sigma, context.x_test, context.y_test, context.indices, eps,
            predictions, steps=budget.attack_steps, attack_samples=budget.attack_samples, n=budget.n,
            alpha=budget.alpha, batch_size=context.certify_batch, seed=context.seed, progress=context.progress,
        )
        outcome.summary.setdefault("empirical_accuracy", {})[format_radius(eps)] = predict_accuracy(predictions)
    return outcome, read_certify_results(tsv)


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``settings.json`` on the first run; on later runs, refuse settings that differ."""
    path = out / "settings.json"
    if path.exists():
        provenance.check(provenance.read_json(path, "comparison settings"), settings, out, "comparison folder",
                         hint="pass another --output or the same settings")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(settings, indent=2, sort_keys=True))


def checkpoint_path(out: Path, method: str, sigma: float) -> Path:
    """Where ``method`` at ``sigma`` is checkpointed; the Gaussian run at 0.25 is the teacher's file."""
    if method == "gaussian" and sigma == TEACHER_SIGMA:
        return out / "teacher" / f"gaussian_noise_{TEACHER_SIGMA}.pt"
    return out / f"noise_{sigma}" / "checkpoints" / f"{method}.pt"


def train_method(
    context: _Context, method: Method, hyperparameters: dict[str, Any], sigma: float, soft: np.ndarray | None,
    checkpoint: Path,
) -> tuple[torch.nn.Module, list[dict[str, float]], int]:
    """Train (or resume, or reuse) one method; returns the model, its history and the epochs run now."""
    budget = context.budget
    before = int(read_checkpoint(checkpoint)["epoch"]) if checkpoint.exists() else 0
    torch.manual_seed(context.seed)
    model = context.registry.create_model(context.arch, context.spec.name).to(context.device)
    config = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr,
                         lr_step_size=budget.lr_step_size, seed=context.seed, checkpoint=str(checkpoint),
                         progress=context.progress)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    history = train(model, method, hyperparameters, sigma, TensorData(context.x_train, context.y_train, soft), config,
                    checkpoint_fields={"arch": context.arch, "dataset": context.spec.name})
    return model, history, max(0, budget.epochs - before)


def teacher_soft_labels(context: _Context, directory: Path) -> tuple[np.ndarray, bool]:
    """The Gaussian teacher's smoothed predictions on the training split, computed once and cached."""
    path = directory / "soft_labels.npy"
    gaussian = context.registry.method("gaussian")
    _, hyperparameters = method_hyperparameters(gaussian, TEACHER_SIGMA, "paper")
    context.log(f"[teacher] gaussian at sigma={TEACHER_SIGMA}")
    teacher, _, _ = train_method(context, gaussian, hyperparameters, TEACHER_SIGMA, None,
                                 directory / f"gaussian_noise_{TEACHER_SIGMA}.pt")
    context.log(f"[soft labels] {context.budget.soft_samples} noise samples per training example")
    computed = soft_labels_to_file(teacher, context.x_train, context.spec.num_classes, TEACHER_SIGMA, path,
                                   n=context.budget.soft_samples, seed=context.seed, progress=context.progress,
                                   settings={"dataset": context.spec.name, "split": "train"})
    return read_soft_labels(path, len(context.x_train), context.spec.num_classes), computed > 0


def summary_table(summaries: Sequence[dict[str, Any]], radii: Sequence[float], attack_eps: Sequence[float],
                  percent: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary: ACR, certified accuracy per radius, timings, empirical accuracy."""
    header = ["method", "n", "ACR", *(f"{r:.2f}" for r in radii), "train s/epoch", "certify s/example",
              *(f"PGD {eps:g}" for eps in attack_eps)]

    def accuracy(value: float) -> str:
        return f"{100 * value:.1f}" if percent else f"{value:.6g}"

    rows = [
        [
            s["method"], str(s["n"]), f"{s['acr']:.3f}" if percent else f"{s['acr']:.6g}",
            *(accuracy(s["certified_accuracy"][format_radius(r)]) for r in radii),
            f"{s['train_seconds_per_epoch']:.3g}", f"{s['certify_seconds_per_example']:.3g}",
            *(accuracy(s["empirical_accuracy"][format_radius(eps)]) for eps in attack_eps),
        ]
        for s in summaries
    ]
    return header, rows


def write_summary(
    comparison: Comparison, certified: dict[str, CertifyResults], dataset: str, sigma: float, preset: str,
    budget: Budget, attack_eps: Sequence[float],
) -> None:
    """``summary.md`` (percentages), ``summary.csv`` (fractions), ``summary.json`` and the plot."""
    from catrs_plugin.plotting import plot_certified_accuracy

    directory = comparison.directory
    header, rows = summary_table(comparison.summaries, comparison.radii, attack_eps, percent=True)
    markdown = "\n".join(
        [f"# {dataset}, sigma = {sigma}, preset {preset}", "",
         f"ACR and certified accuracy (%) at each L2 radius; CERTIFY with N0={budget.n0}, N={budget.n}, "
         f"alpha={budget.alpha} on the same {comparison.summaries[0]['n']} test examples for every method"
         + ("; PGD columns: accuracy (%) of the smoothed classifier (PREDICT) on ART L2 PGD examples at that eps"
            if attack_eps else "") + ".", "",
         render_table(header, rows, markdown=True), ""]
    )
    write_atomic(directory / "summary.md", markdown)
    header, rows = summary_table(comparison.summaries, comparison.radii, attack_eps, percent=False)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    write_atomic(directory / "summary.csv", buffer.getvalue())
    write_atomic(directory / "summary.json", json.dumps({
        "dataset": dataset, "sigma": sigma, "preset": preset, "budget": asdict(budget),
        "radii": comparison.radii, "attack_eps": list(attack_eps), "methods": comparison.summaries,
    }, indent=2))
    plot_certified_accuracy(certified, directory / "certified_accuracy.png",
                            title=f"{dataset}, sigma = {sigma}")



__all__ = ["BUDGETS", "Budget", "Comparison", "MethodOutcome", "parse_floats", "parse_methods", "run_comparison"]
