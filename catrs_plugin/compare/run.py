"""Side-by-side comparison of training methods (``catrs compare``): the paper's table in one command.

Every method is trained at every requested noise level from the same initialisation with the
same data order, augmentation, noise seeds and budget, then certified on the same examples
with the same CERTIFY settings and noise. CAT-RS's soft labels come from one Gaussian teacher
at sigma = 0.25, trained once (at sigma = 0.25 it *is* the Gaussian run) and cached with its
smoothed predictions. Where a method's reference trains with other optimiser settings, its
preset says so (:attr:`catrs_plugin.methods.Method.training`, e.g. MACER's own learning rate).

The runs are independent jobs (:mod:`catrs_plugin.compare.runners`): one after the other in this
process, spread over several GPUs with several runs per GPU, or submitted to Slurm through
``submitit``. Each job resumes from its own files, and the summaries are merged once every
job has finished. A run that collapsed (a non-finite loss, or a model no better under noise than a
constant answer; :mod:`catrs_plugin.compare.collapse`) is not certified and is reported as collapsed
in the tables; with ``certify_collapsed`` (``--certify-collapsed``) it is certified anyway and its
rows are marked.

Output directory::

    settings.json                      shared settings; a rerun must use the same ones
    teacher/gaussian_noise_0.25.pt     the teacher (also the Gaussian run at sigma = 0.25)
    teacher/soft_labels.npy            its smoothed predictions on the training split
    noise_<sigma>/checkpoints/<method>.pt
    noise_<sigma>/certify/<method>.tsv               Cohen-format CERTIFY rows
    noise_<sigma>/empirical/<method>_eps_<eps>.tsv   PREDICT rows on ART L2-PGD examples (``attack_eps``)
    noise_<sigma>/summary.md, summary.csv, summary.json, certified_accuracy.png
    summary.md, summary.csv            every noise level in one table (the paper's layout)
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from catrs_plugin.certify.files import certify_to_file, select_indices
from catrs_plugin.certify.sequential import DEFAULT_RADII, StoppingRule
from catrs_plugin.compare.collapse import check_model
from catrs_plugin.compare.plan import (
    ATTACK,
    BUDGETS,
    TEACHER_SIGMA,
    Budget,
    Comparison,
    MethodOutcome,
    Plan,
    Run,
    check_preset_dataset,
    plan_run,
)
from catrs_plugin.compare.runners import InProcess, Job, run_jobs
from catrs_plugin.compare.summary import check_settings, merge_summaries
from catrs_plugin.methods.base import Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.metrics import format_radius
from catrs_plugin.results.published import published_results
from catrs_plugin.results.tsv import predict_accuracy
from catrs_plugin.train.checkpoint import epochs_done, read_checkpoint
from catrs_plugin.train.data import DEFAULT_WORKERS, training_data, training_soft_labels_to_file
from catrs_plugin.train.loop import TrainConfig, TrainingDiverged, train
from catrs_plugin.utils import locking
from catrs_plugin.utils.reading import load_npy
from catrs_plugin.utils.validation import check_positive_int, check_sigma

logger = logging.getLogger(__name__)


class RunsFailed(RuntimeError):
    """Some runs of a comparison failed on a parallel runner (the others finished; a rerun resumes).

    Attributes
    ----------
    failures : dict
        Job key (``"teacher"`` or ``(method, sigma)``) to the exception it raised.
    """

    def __init__(self, failures: Mapping[Any, BaseException]) -> None:
        self.failures = dict(failures)
        lines = "; ".join(f"{describe_job(key)}: {type(error).__name__}: {error}"
                          for key, error in self.failures.items())
        super().__init__(f"{len(self.failures)} run(s) failed ({lines}); the others finished. Rerun the same command "
                         "to resume")


def describe_job(key: Any) -> str:
    """``"the teacher"`` or ``"catrs at sigma 0.25"`` for a job key of :func:`run_comparison`."""
    return "the teacher" if key == "teacher" else f"{key[0]} at sigma {key[1]}"


@locking.holding(lambda arguments: arguments["output"], "comparison folder")
def run_comparison(
    dataset: str,
    methods: Sequence[Method],
    sigmas: float | Sequence[float],
    output: str | os.PathLike,
    preset: str = "quick",
    budget: Budget | None = None,
    *,
    arch: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    runner: Any = None,
    method_presets: Mapping[str, str] | None = None,
    certify_batch: int | str = "auto",
    attack_eps: Sequence[float] = (),
    workers: int = DEFAULT_WORKERS,
    fast: bool = False,
    progress: bool = False,
    published: str | os.PathLike | None = None,
    tensorboard: str | os.PathLike | None = None,
    certify_collapsed: bool = False,
    log: Callable[[str], None] = logger.info,
    labels: Mapping[str, str] | None = None,
    sequential: Mapping[str, Any] | None = None,
) -> list[Comparison]:
    """Train, certify (and optionally attack) every method at every noise level; write the summaries.

    Parameters
    ----------
    dataset : str
        Registered dataset (its training split trains, its ``test`` split is certified).
    methods : sequence of Method
        Methods to compare (see :func:`parse_methods`).
    sigmas : float or sequence of float
        Noise levels of training and certification.
    output : path
        Output directory (see the module docstring); rerunning with the same one resumes.
    preset : {"paper", "quick", "imagenet", "mnist"}
        Budget (:data:`BUDGETS`) and method preset; a method without that preset at a sigma
        uses its ``paper`` preset, else its defaults. ``paper``, ``imagenet`` and ``mnist`` are
        the reference's recipes of their datasets only (:data:`~catrs_plugin.compare.plan.PRESET_DATASETS`).
    budget : Budget, optional
        Overrides the preset's budget (e.g. tiny settings in tests).
    arch : str, optional
        Registered architecture (default: the dataset's).
    data_dir : str, optional
        Where file-based datasets live.
    seed : int
        Seed of initialisation, data order, augmentation, training noise and certification noise.
    device : torch.device or str
        Where to train and certify when no ``runner`` is given.
    runner : InProcess, DevicePool or SubmititRunner, optional
        Where the runs execute (:mod:`catrs_plugin.compare.runners`; default: one after the other on
        ``device``).
    method_presets : mapping, optional
        Method name to the preset it uses instead of ``preset`` (e.g. ``{"macer": "original"}``).
    certify_batch : int or "auto"
        Noisy samples per forward pass in certification and soft labels (results do not depend
        on it); ``"auto"``: sized from free memory on CUDA,
        :data:`~catrs_plugin.certify.smoothing.CPU_AUTO_BATCH` on the CPU.
    attack_eps : sequence of float
        L2 radii of ART's PGD attack on the smoothed classifier; the empirical accuracy of each
        method's smoothed classifier (PREDICT on the adversarial example) is reported per radius.
        The attack is the registered :data:`ATTACK` (the adapters register it; it needs ART).
    workers : int
        Data-loading worker processes for file-based datasets (ImageNet).
    fast : bool
        Certify on the fast path of :class:`~catrs_plugin.certify.smoothing.Smooth` (``fast=True``);
        each result file records it, so a rerun with the other setting is refused.
    progress : bool
        Show progress bars.
    published : path, optional
        A folder of published results laid out like the CAT-RS release
        (:mod:`catrs_plugin.results.published`): the summaries then put the published rows of the
        compared methods for ``dataset`` at each sigma next to the measured ones, marked published.
    tensorboard : path, optional
        Folder of TensorBoard event files: each run adds its per-epoch metrics in
        ``noise_<sigma>/<method>`` under it (:mod:`catrs_plugin.train.records`).
    certify_collapsed : bool
        Certify (and attack) a run that counts as collapsed too, marking its rows, instead of
        reporting it without numbers; a teacher that counts as collapsed then trains CAT-RS anyway.
        A run whose loss became non-finite is never certified (its weights are not finite).
    log : callable
        Receives one line per step (default: INFO messages of this module's logger, which
        ``catrs`` prints; from worker processes and cluster jobs they come through the
        runner's logging instead).
    labels : mapping, optional
        What messages call each :class:`Budget` field (``catrs compare`` passes its options, e.g.
        ``{"batch_size": "--batch"}``); the field names otherwise.
    sequential : mapping, optional
        Certify sequentially: :func:`~catrs_plugin.certify.files.certify_to_file`'s keywords
        ``sequential=True``, ``radii``, ``alpha_sequence`` (``catrs compare --sequential``).
        Certified accuracy at the radii stays comparable between methods and with exact
        CERTIFY, ACR does not; each result file records the procedure, so a rerun with the
        other one is refused.

    Returns
    -------
    list of Comparison
        One per noise level, in the order given.

    Raises
    ------
    RunsFailed
        When runs failed on a parallel runner (the others finished; rerun to resume).
    catrs_plugin.utils.locking.OutputLocked
        When another comparison is writing ``output`` (the folder is locked while this runs).
    ValueError
        When a setting is out of range, or a method's loader batches would be too small for its
        optimizer steps (:meth:`~catrs_plugin.methods.Method.check_batch`); checked before
        anything is written.
    """
    if preset not in BUDGETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(BUDGETS))}")
    check_preset_dataset(preset, dataset)
    sigma_list = [check_sigma(s) for s in ([sigmas] if isinstance(sigmas, (int, float)) else sigmas)]
    if not sigma_list or len(set(sigma_list)) != len(sigma_list):
        raise ValueError(f"sigmas must name each noise level once, got {sigmas!r}")
    budget = (budget or BUDGETS[preset]).validate(labels)
    registry = get_registry()
    spec = registry.dataset(dataset)
    arch = arch or spec.default_arch
    registry.model(arch)
    if not methods:
        raise ValueError("methods is empty; pass at least one registered method")
    if attack_eps:
        registry.attack(ATTACK)  # fail before training when no plugin provides the attack
    if certify_batch != "auto":
        check_positive_int(certify_batch, "certify_batch")
    for sigma in sigma_list if published is not None else ():
        published_results(published, dataset, sigma)  # fail before training when they are missing
    if sequential:
        rules = [StoppingRule(sigma, budget.n, budget.alpha, sequential.get("radii", DEFAULT_RADII),
                              sequential.get("alpha_sequence")) for sigma in sigma_list]  # bad values fail now
        sequential = {**sequential, "radii": rules[0].radii}
    presets = {method.name: (method_presets or {}).get(method.name, preset) for method in methods}
    runs = {(method.name, sigma): plan_run(method, sigma, presets[method.name], budget)
            for sigma in sigma_list for method in methods}
    for (name, _), run in runs.items():  # before anything is written: a run that would take no step is no run
        smaller = "train_examples" if 0 < budget.train_examples < run.train["batch_size"] else "batch_size"
        size = {"train_examples": budget.train_examples, "batch_size": run.train["batch_size"]}[smaller]
        registry.method(name).check_batch(size, run.hyperparameters, (labels or {}).get(smaller, smaller))
    out = Path(output)
    check_settings(out, {"dataset": dataset, "arch": arch, "preset": preset, "seed": seed,
                         "method_presets": dict(sorted((method_presets or {}).items())),
                         **{f"budget.{key}": value for key, value in asdict(budget).items()},
                         **({"certify": dict(sequential)} if sequential else {})})
    plan = Plan(dataset, arch, data_dir, str(out), preset, budget, seed, tuple(attack_eps), certify_batch, workers,
                fast, progress, dict(sequential or {}), None if tensorboard is None else str(tensorboard),
                bool(certify_collapsed))
    jobs: dict[Any, Job] = {}
    needs_teacher = any(method.needs_soft_labels for method in methods)
    if needs_teacher:
        teacher = plan_run(registry.method("gaussian"), TEACHER_SIGMA, (method_presets or {}).get("gaussian", preset),
                           budget)
        jobs["teacher"] = Job(teacher_job, (plan, teacher))
    for key, run in runs.items():
        is_teacher = run.method == "gaussian" and run.sigma == TEACHER_SIGMA
        waits = needs_teacher and (registry.method(run.method).needs_soft_labels or is_teacher)
        jobs[key] = Job(evaluate_job, (plan, run), "teacher" if waits else None)
    runner = runner or InProcess(device, log)
    log(f"{dataset}: {len(methods)} method(s) at sigma {', '.join(map(str, sigma_list))}, budget of preset {preset} "
        f"({budget.epochs} epochs, {plan.procedure} N0={budget.n0} N={budget.n} alpha={budget.alpha}); "
        f"{len(runs)} runs on {runner.describe()}")
    try:
        results, failures = run_jobs(runner, jobs)
    finally:
        runner.close()
    if failures:
        raise RunsFailed(failures) from next(iter(failures.values()))
    computed = bool(results.get("teacher", False))
    comparisons = []
    for sigma in sigma_list:
        comparison = Comparison(out / f"noise_{sigma}", sigma, soft_labels_computed=computed)
        for method in methods:
            result = results[(method.name, sigma)]
            comparison.outcomes.append(MethodOutcome(method.name, result["summary"], result["epochs_trained"],
                                                     result["rows_certified"], result["rows_attacked"]))
            if result["summary"]["collapsed"]:
                done = "certified anyway (--certify-collapsed)" if result["summary"]["certified"] else "not certified"
                log(f"WARNING: {method.name} at sigma {sigma} collapsed and is {done}: "
                    f"{result['summary']['collapsed']}")
        comparisons.append(comparison)
    merge_summaries(out, comparisons, dataset, preset, budget, tuple(attack_eps), published,
                    procedure=plan.procedure)
    return comparisons


def train_run(
    plan: Plan, run: Run, soft: np.ndarray | None, device: torch.device, log: Callable[[str], None]
) -> tuple[torch.nn.Module, list[dict[str, float]], int, str | None]:
    """Train (or resume, or reuse) one run.

    Returns the model, its history, the epochs run now and, when the loss became non-finite,
    why (the run then stopped there).
    """
    registry = get_registry()
    spec, method = registry.dataset(plan.dataset), registry.method(run.method)
    checkpoint = run.checkpoint(plan.output)
    before = epochs_done(read_checkpoint(checkpoint), checkpoint) if checkpoint.exists() else 0
    torch.manual_seed(plan.seed)
    model = registry.create_model(plan.arch, spec.name).to(device)
    board = None if plan.tensorboard is None else str(Path(plan.tensorboard) / f"noise_{run.sigma}" / run.method)
    config = TrainConfig(**run.train, seed=plan.seed, checkpoint=str(checkpoint), progress=plan.progress,
                         tensorboard=board)
    examples = plan.budget.train_examples if plan.budget.train_examples >= 0 else None
    data = training_data(spec, plan.data_dir, soft_labels=soft, n_examples=examples, batch_size=config.batch_size,
                         workers=plan.workers)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if before < config.epochs:  # a finished run (e.g. the teacher, again as the Gaussian run) trains nothing
        teacher = " (the teacher)" if run.method == "gaussian" and run.sigma == TEACHER_SIGMA else ""
        hyperparameters = f"{run.preset} preset's hyper-parameters" if run.preset else "default hyper-parameters"
        log(f"[train] {run.method} at sigma={run.sigma}{teacher}: {hyperparameters} {run.hyperparameters or '{}'}, "
            f"{config.epochs} epochs, lr {config.lr:g}")
    try:
        history = train(model, method, run.hyperparameters, run.sigma, data, config,
                        checkpoint_fields={"arch": plan.arch, "dataset": spec.name})
    except TrainingDiverged as error:
        history = list(read_checkpoint(checkpoint).get("history", [])) if checkpoint.exists() else []
        return model, history, max(0, len(history) - before), str(error)
    return model, history, max(0, config.epochs - before), None


def teacher_job(plan: Plan, run: Run, *, device: torch.device, log: Callable[[str], None]) -> bool:
    """Train the Gaussian teacher and cache its smoothed predictions on the training split.

    Returns whether the soft labels were computed now (False when they were cached).
    """
    path = Path(plan.output) / "teacher" / "soft_labels.npy"
    teacher, history, _, diverged = train_run(plan, run, None, device, log)
    spec = get_registry().dataset(plan.dataset)
    if diverged:
        raise RuntimeError(f"the Gaussian teacher collapsed ({diverged}); its soft labels would be meaningless")
    problem = check_model(teacher, *spec.load("test", data_dir=plan.data_dir), TEACHER_SIGMA, plan.seed).problem
    if problem and not plan.certify_collapsed:
        raise RuntimeError(f"the Gaussian teacher collapsed ({problem}); its soft labels would be meaningless "
                           "(--certify-collapsed uses them anyway)")
    if problem:
        log(f"WARNING: the Gaussian teacher collapsed ({problem}); its soft labels are used anyway "
            "(--certify-collapsed)")
    examples = plan.budget.train_examples if plan.budget.train_examples >= 0 else None
    computed = training_soft_labels_to_file(
        teacher, spec, TEACHER_SIGMA, plan.budget.soft_samples, path, plan.seed, plan.data_dir, n_examples=examples,
        batch_size=plan.certify_batch, workers=plan.workers, progress=plan.progress)
    if computed:
        log(f"[soft labels] the teacher's smoothed predictions, {plan.budget.soft_samples} noise samples per training "
            f"example, for {computed} examples")
    return computed > 0


def evaluate_job(plan: Plan, run: Run, *, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) one run, check it for collapse, certify it and attack it; resumable.

    Returns ``summary`` (what the tables show) and the counts ``epochs_trained``,
    ``rows_certified`` and ``rows_attacked`` of work done now.
    """
    registry = get_registry()
    spec, method = registry.dataset(plan.dataset), registry.method(run.method)
    budget = plan.budget
    soft = load_npy(Path(plan.output) / "teacher" / "soft_labels.npy", "teacher soft labels") \
        if method.needs_soft_labels else None
    model, history, trained, diverged = train_run(plan, run, soft, device, log)
    x_test, y_test = spec.load("test", data_dir=plan.data_dir)
    indices = select_indices(len(x_test), budget.skip, budget.max_examples)
    check = None if diverged else check_model(model, x_test, y_test, run.sigma, plan.seed)
    collapsed = diverged or check.problem
    directory = run.directory(plan.output)
    tsv = directory / "certify" / f"{run.method}.tsv"
    summary: dict[str, Any] = {
        "method": run.method,
        "sigma": run.sigma,
        "paper": method.paper,
        "preset": run.preset,
        "hyperparameters": run.hyperparameters,
        "training": run.train,
        # Bit-for-bit on the CPU only at the same thread count (the order of float sums follows it).
        **({"cpu_threads": torch.get_num_threads()} if torch.device(device).type == "cpu" else {}),
        "epochs": len(history),
        "train_seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else float("nan"),
        "certify_path": str(tsv),
        "collapsed": collapsed,
        "certified": False,
        **({"noisy_check": check.as_dict()} if check is not None else {}),
    }
    result = {"summary": summary, "epochs_trained": trained, "rows_certified": 0, "rows_attacked": 0}
    if diverged or (collapsed and not plan.certify_collapsed):
        log(f"[collapsed] {run.method} at sigma={run.sigma}: {collapsed}; not certified")
        return result
    if collapsed:
        log(f"[collapsed] {run.method} at sigma={run.sigma}: {collapsed}; certified anyway (--certify-collapsed)")
    summary["certified"] = True
    batch = plan.certify_batch
    result["rows_certified"] = certify_to_file(
        model, spec.num_classes, run.sigma, x_test, y_test, tsv, indices, n0=budget.n0, n=budget.n,
        alpha=budget.alpha, batch_size=batch, seed=plan.seed, fast=plan.fast,
        progress=plan.progress and f"certify {run.method} sigma={run.sigma:g}", **plan.sequential)
    if result["rows_certified"]:
        log(f"[certify] {run.method} at sigma={run.sigma}: {result['rows_certified']} of {len(indices)} examples "
            "certified now")
    for eps in plan.attack_eps:
        predictions = directory / "empirical" / f"{run.method}_eps_{eps}.tsv"
        log(f"[attack] {run.method} at sigma={run.sigma}: ART L2 PGD at eps={eps}, then PREDICT")
        result["rows_attacked"] += registry.attack(ATTACK).to_file(
            model, spec.num_classes, spec.input_shape, run.sigma, x_test, y_test, indices, eps, predictions,
            steps=budget.attack_steps, attack_samples=budget.attack_samples, n=budget.n, alpha=budget.alpha,
            batch_size=batch, seed=plan.seed, progress=plan.progress,
        )
        summary.setdefault("empirical_accuracy", {})[format_radius(eps)] = predict_accuracy(predictions)
    return result

