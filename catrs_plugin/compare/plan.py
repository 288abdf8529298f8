"""What a comparison runs: the shared budget, the per-run settings, the parsed command-line lists,
and the outcome records that :mod:`catrs_plugin.compare.run` fills and :mod:`catrs_plugin.compare.summary` tabulates."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from catrs_plugin.methods.base import Method
from catrs_plugin.methods.smoothed import MNIST_TRAINING, QUICK_EPOCHS
from catrs_plugin.plugins.registry import Registry
from catrs_plugin.train.data import DEFAULT_WORKERS
from catrs_plugin.utils.validation import (
    FLOAT32_MAX,
    check_alpha,
    check_count_or_all,
    check_non_negative,
    check_positive_int,
    parse_numbers,
)

#: Noise level of the Gaussian teacher whose smoothed predictions are CAT-RS's soft labels.
TEACHER_SIGMA = 0.25

#: Registered attack behind ``attack_eps``: ART's L2 PGD on the smoothed classifier.
ATTACK = "art_l2_pgd"

#: Budget fields that are :class:`~catrs_plugin.train.loop.TrainConfig` fields too.
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "lr_step_size")


@dataclass(frozen=True)
class Budget:
    """Training, soft-label, certification and attack settings shared by every method.

    Attributes
    ----------
    epochs, batch_size, lr, lr_step_size
        SGD training (momentum 0.9, weight decay 1e-4, learning rate x0.1 every ``lr_step_size``
        epochs as the reference's ``scheduler.step(epoch)`` does). A method's preset may
        replace them (:attr:`~catrs_plugin.methods.Method.training`), except the ``pinned`` ones.
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
    pinned : tuple of str
        Fields set explicitly (``catrs compare --epochs`` ...), which methods' presets keep.
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
    pinned: tuple[str, ...] = ()

    def validate(self, labels: Mapping[str, str] | None = None) -> "Budget":
        """Raise ``ValueError`` naming the first setting out of range (as ``labels`` calls it, e.g. by its
        command-line option; by its field name otherwise); return self."""
        label = (labels or {}).get
        for name in ("epochs", "batch_size", "lr_step_size", "soft_samples", "n0", "n", "skip", "attack_steps",
                     "attack_samples"):
            check_positive_int(getattr(self, name), label(name, name))
        check_non_negative(self.lr, label("lr", "lr"), maximum=FLOAT32_MAX)
        check_alpha(self.alpha, label("alpha", "alpha"))
        check_count_or_all(self.max_examples, label("max_examples", "max_examples"))
        check_count_or_all(self.train_examples, label("train_examples", "train_examples"))
        unknown = sorted(set(self.pinned) - set(TRAIN_FIELDS))
        if unknown:
            raise ValueError(f"pinned names {unknown}, which are not training settings; valid: {TRAIN_FIELDS}")
        return self

    def train_settings(self, method_settings: Mapping[str, Any]) -> dict[str, Any]:
        """TrainConfig fields of one run: this budget's, then the method preset's unless pinned."""
        settings: dict[str, Any] = {name: getattr(self, name) for name in TRAIN_FIELDS}
        settings.update({key: value for key, value in method_settings.items() if key not in self.pinned})
        return settings


#: ``paper``: the CIFAR-10 recipe of the CAT-RS paper. ``quick``: minutes on a CPU for small data
#: (the methods' ``quick`` presets scale their epoch schedules to the same length). ``imagenet``:
#: the paper's ImageNet recipe (ResNet-50, 90 epochs, every 100th validation image certified).
#: ``mnist``: the reference's MNIST recipe (LeNet, lr 0.01, :data:`~catrs_plugin.methods.smoothed.MNIST_TRAINING`).
BUDGETS = {
    "paper": Budget(epochs=150, batch_size=256, lr=0.1, lr_step_size=50, soft_samples=10_000, n0=100, n=100_000,
                    alpha=0.001),
    "quick": Budget(epochs=QUICK_EPOCHS, batch_size=256, lr=0.1, lr_step_size=QUICK_EPOCHS // 3, soft_samples=1_000,
                    n0=100, n=10_000, alpha=0.001, skip=2),
    "imagenet": Budget(epochs=90, batch_size=256, lr=0.1, lr_step_size=30, soft_samples=10_000, n0=100, n=100_000,
                       alpha=0.001, skip=100),
    "mnist": Budget(**MNIST_TRAINING, soft_samples=10_000, n0=100, n=100_000, alpha=0.001),
}

#: The datasets each budget is the reference's recipe for; a budget not listed (``quick``) is for any dataset.
PRESET_DATASETS = {"paper": ("cifar10", "cifar100"), "imagenet": ("imagenet",), "mnist": ("mnist",)}


def check_preset_dataset(preset: str, dataset: str) -> None:
    """Refuse a budget that is the recipe of other datasets than ``dataset``, naming the recipes there are.

    Raises
    ------
    ValueError
        If ``preset`` is in :data:`PRESET_DATASETS` without ``dataset``.
    """
    datasets = PRESET_DATASETS.get(preset)
    if datasets is None or dataset in datasets:
        return
    recipes = "; ".join(f"{', '.join(names)}: {name}" for name, names in PRESET_DATASETS.items())
    raise ValueError(
        f"--preset {preset} is the reference's recipe for {', '.join(datasets)}, and there is none for {dataset!r} "
        f"(recipes: {recipes}); --preset quick runs any dataset on a short budget that reproduces no paper figure, "
        "and --epochs, --lr, --N ... set its fields"
    )


@dataclass
class MethodOutcome:
    """What :func:`run_comparison` did and found for one method at one noise level."""

    name: str
    summary: dict[str, Any]
    epochs_trained: int = 0
    rows_certified: int = 0
    rows_attacked: int = 0

    @property
    def collapsed(self) -> str | None:
        """Why the run counts as collapsed, or None (see :attr:`certified`)."""
        return self.summary.get("collapsed")

    @property
    def certified(self) -> bool:
        """Whether the run was certified: it did not collapse, or ``certify_collapsed`` was set."""
        return bool(self.summary.get("certified"))


@dataclass
class Comparison:
    """The methods at one noise level: one outcome per method, the published rows put next to them
    (summaries marked ``source: published``) and the files written."""

    directory: Path
    sigma: float
    radii: list[float] = field(default_factory=list)
    outcomes: list[MethodOutcome] = field(default_factory=list)
    soft_labels_computed: bool = False
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [outcome.summary for outcome in self.outcomes]


@dataclass(frozen=True)
class Plan:
    """Settings every job of one comparison shares (picklable, for worker processes and Slurm jobs).

    ``sequential`` holds :func:`~catrs_plugin.certify.files.certify_to_file`'s sequential keywords
    (``sequential``, ``radii``, ``alpha_sequence``), empty for exact CERTIFY.
    """

    dataset: str
    arch: str
    data_dir: str | None
    output: str
    preset: str
    budget: Budget
    seed: int
    attack_eps: tuple[float, ...] = ()
    certify_batch: int | str = "auto"
    workers: int = DEFAULT_WORKERS
    fast: bool = False
    progress: bool = False
    sequential: Mapping[str, Any] = field(default_factory=dict)
    tensorboard: str | None = None
    certify_collapsed: bool = False

    @property
    def procedure(self) -> str:
        """How the runs are certified, for the summaries' settings line."""
        if not self.sequential:
            return "CERTIFY"
        radii = ", ".join(f"{r:g}" for r in self.sequential["radii"])
        share = self.sequential.get("alpha_sequence")
        return (f"sequential CERTIFY (radii {radii}; confidence sequence at "
                f"{'the default share of alpha' if share is None else f'alpha_sequence={share:g}'})")


@dataclass(frozen=True)
class Run:
    """One cell of the table: a method at a noise level, with its resolved settings."""

    method: str
    sigma: float
    preset: str | None
    hyperparameters: dict[str, Any]
    train: dict[str, Any]

    def checkpoint(self, output: str | os.PathLike) -> Path:
        return checkpoint_path(Path(output), self.method, self.sigma)

    def directory(self, output: str | os.PathLike) -> Path:
        return Path(output) / f"noise_{self.sigma}"


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
    values = parse_numbers(text, name)
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{name} must be comma-separated numbers > 0, got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} names a value twice: {text!r}")
    return values


def parse_method_presets(pairs: Sequence[str], registry: Registry) -> dict[str, str]:
    """``["macer=original"]`` -> ``{"macer": "original"}``, checking that each method has that preset."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        name, sep, preset = pair.partition("=")
        if not sep or not name or not preset:
            raise ValueError(f"--method-preset takes METHOD=PRESET, e.g. macer=original, got {pair!r}")
        method = registry.method(name)
        if preset not in method.presets:
            raise ValueError(f"method {name!r} has no preset {preset!r}; valid: {', '.join(sorted(method.presets))}")
        chosen[name] = preset
    return chosen


def method_hyperparameters(method: Method, sigma: float, preset: str) -> tuple[str | None, dict[str, Any]]:
    """The method's ``preset`` at ``sigma`` if it defines one, else its ``paper`` preset, else its defaults.

    Returns the preset actually used (None for the defaults) and the hyper-parameters.
    """
    for name in (preset, "paper"):
        if sigma in method.presets.get(name, {}):
            return name, method.hyperparameters(sigma, name)
    return None, method.hyperparameters()


def plan_run(method: Method, sigma: float, preset: str, budget: Budget) -> Run:
    """The settings ``method`` trains with at ``sigma`` under ``preset`` and ``budget``."""
    used, hyperparameters = method_hyperparameters(method, sigma, preset)
    return Run(method.name, sigma, used, hyperparameters, budget.train_settings(method.train_settings(used)))


def checkpoint_path(out: Path, method: str, sigma: float) -> Path:
    """Where ``method`` at ``sigma`` is checkpointed; the Gaussian run at 0.25 is the teacher's file."""
    if method == "gaussian" and sigma == TEACHER_SIGMA:
        return out / "teacher" / f"gaussian_noise_{TEACHER_SIGMA}.pt"
    return out / f"noise_{sigma}" / "checkpoints" / f"{method}.pt"
