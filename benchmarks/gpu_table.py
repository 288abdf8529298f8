"""The GPU evidence in one command: the CUDA tests and the benchmark table, within a time budget.

Sections, in the order they run (their priority). Each benchmark section runs
``benchmarks/certify.py`` or ``benchmarks/train.py`` (every contender in a fresh process) and
prints that script's report; every section stores what it found in ``OUTPUT/SECTION.json`` as
soon as it ends, and a rerun reuses the sections stored complete (``--rerun`` measures again):

* ``cuda-tests``: ``pytest -m cuda`` with ``CATRS_TEST_COMPILE=1``: the tests marked ``cuda``
  (the engine on the GPU, the fast path under CUDA graphs, the sync-free training steps, a
  compiled CAT-RS step of a batch-norm ResNet-20 under CUDA graphs against eager fp32),
  stopped after :data:`TESTS_LIMIT` seconds; outcomes in ``cuda-tests.json``, the output in
  ``cuda-tests.log``.
* ``certify-resnet110``: CIFAR ResNet-110 (seeded random weights: speed only), N0 = 100,
  N = 100,000, up to 5 images: engine (fp32, exact), engine-fast (``Smooth(fast=True)``), ART
  and the per-image loop (on the first image only), engine-bf16 (autocast, channels_last).
  engine-fast forwards 14,300 samples at a time, (N0 + N) / 7, so that every forward pass
  has the one compiled shape (``auto`` would take 16,000 and compile a second, padded shape
  for the last batch of each image). Target: engine-fast in at most 0.35 s per image.
* ``train-resnet110``: CAT-RS on CIFAR ResNet-110, batch 256, M = 4, T = 4, up to 20 loader
  batches: ours-fast (:func:`catrs_plugin.train.loop.fast_config`: bf16, channels_last, fused
  SGD, ``torch.compile`` with CUDA graphs), the reference-style loop, ours (fp32), ours-amp.
  Target: ours-fast in at most 60 s per epoch, extrapolated from the timed batches.
* ``certify-resnet50``: ImageNet ResNet-50 (timm, random weights), N = 100,000, up to 2
  images: engine-fast (batch 1,300, which divides N0 + N), engine, engine-bf16, the loop (ART
  cannot hold N = 100,000 ImageNet noises on the host). Target: engine-fast in at most 3 s
  per image.
* ``agreement-digits``: the digits CNN trained here (Gaussian, sigma 0.25), up to all 359
  test images, N = 100,000: engine-fast and engine-bf16 against the exact engine.
* ``agreement-digits32``: a CIFAR ResNet-20 trained here on CIFAR-shaped digits, up to 359
  test images, N = 10,000: the same comparison.

**Budget.** With ``--budget SECONDS`` the command ends within that many seconds of its start
(:data:`MARGIN` of them kept for the table). Before each section the seconds left are shared
out: the section may use what is left after reserving the smallest useful run of the sections
after it (as many of them, in order, as fit). Its contenders and sizes come from estimates
(:data:`COSTS`): first the contenders, in priority order (as listed above), that fit at the
section's smallest size, then the largest size (images, batches) at which those fit; they run
in that order, the compiling one last, so that a compilation longer than estimated costs the
others nothing. A section none of whose contenders fits is skipped and marked "not reached
within the budget"; so is a contender left out. A contender still running when its section's
seconds are up is killed with the processes it started, so that a section whose estimate was
too low never takes the time reserved for the sections after it. Compilation happens inside
each contender's process, in its warm-up, so it counts against the budget; it is reported apart
(``compile s``, ``warm-up s``), as is each contender's whole process time. Without ``--budget``
every section runs at the GPU table's sizes.

At the end it prints (and writes to ``OUTPUT/table.rst``) the sections' state, every target
marked met, NOT met, or not reached within the budget, and the tables in reStructuredText.
The exit status is 1 if a CUDA test failed or a section broke, else 0. On a GPU, with the
project's wheel and its missing dependencies installed (docs/benchmarks.rst says how)::

    python benchmarks/gpu_table.py --device cuda --budget 480 --output gpu-benchmarks

``--quick`` shrinks every size so that the script can be checked on a CPU in minutes (its
figures say nothing about a GPU, and the targets are not judged); CI runs
``--device cpu --quick --budget 120``.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here, before the imports

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import certify  # noqa: E402
import torch  # noqa: E402
import train  # noqa: E402
from _common import describe_device, trained_path  # noqa: E402

from catrs_plugin.cli._common import resolve_device  # noqa: E402
from catrs_plugin.utils import provenance  # noqa: E402
from catrs_plugin.utils.atomic import write_atomic  # noqa: E402

#: Seconds of the budget kept for stopping a contender, storing its section and printing the table.
MARGIN = 8.0

#: Seconds the CUDA tests may take at most (the issue allows about 90).
TESTS_LIMIT = 120.0

TESTS = "cuda-tests"

#: The contenders that compile in their warm-up.
COMPILING = ("engine-fast", "ours-fast")


@dataclass(frozen=True)
class Section:
    """One benchmark section: what it runs and what the budget may shrink.

    ``options`` are the script's arguments at the GPU table's sizes (without the contenders and
    the size option), ``quick`` the arguments that replace those they name under ``--quick``;
    ``contenders`` are in priority order (result names: ``engine-fast``, ``engine-bf16``);
    ``size`` is the option the budget shrinks, through ``sizes`` (largest first; the first is
    the GPU table's) or ``quick_sizes``; the first ``core`` contenders make its smallest useful
    run, which earlier sections leave time for.
    """

    script: Any
    options: tuple[str, ...]
    quick: tuple[str, ...]
    contenders: tuple[str, ...]
    size: str
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    core: int = 1


SECTIONS = {
    "certify-resnet110": Section(
        certify,
        ("--model", "cifar_resnet110", "--n", "100000", "--batch", "10000", "--fast-batch", "14300",
         "--slow-images", "1", "--channels-last"),
        ("--n0", "10", "--n", "10", "--batch", "10", "--fast-batch", "10"),
        ("engine", "engine-fast", "art", "loop", "engine-bf16"), "--images", (5, 4, 3, 2, 1), (1,), core=2),
    "train-resnet110": Section(
        train,
        ("--model", "cifar_resnet110", "--batch", "256", "--workers", "4"),
        ("--model", "cifar_resnet20", "--batch", "8", "--t", "1", "--workers", "0"),
        ("ours-fast", "reference", "ours", "ours-amp"), "--batches", (20, 10, 5, 3, 2), (1,), core=3),
    "certify-resnet50": Section(
        certify,
        ("--model", "resnet50", "--n", "100000", "--batch", "1000", "--fast-batch", "1300", "--slow-images", "1",
         "--channels-last"),
        ("--n0", "5", "--n", "5", "--batch", "10", "--fast-batch", "10"),
        ("engine-fast", "engine", "engine-bf16", "loop"), "--images", (2, 1), (1,)),
    "agreement-digits": Section(
        certify,
        ("--trained", "digits", "--n", "100000", "--batch", "20000", "--fast-batch", "auto"),
        ("--n", "2000", "--batch", "2100", "--fast-batch", "2100"),
        ("engine", "engine-fast", "engine-bf16"), "--images", (359, 200, 100, 50), (359, 100, 20), core=2),
    "agreement-digits32": Section(
        certify,
        ("--trained", "digits32", "--n", "10000", "--batch", "10000", "--fast-batch", "auto", "--channels-last"),
        ("--trained-epochs", "2", "--n", "200", "--batch", "300", "--fast-batch", "300"),
        ("engine", "engine-fast", "engine-bf16"), "--images", (359, 200, 100, 50), (20, 10), core=2),
}

#: Every section, in the order (priority) in which they run.
ORDER = (TESTS, *SECTIONS)

#: Estimated costs per device type and section: ``start``, the seconds to start a contender's
#: process (interpreter, imports, model); ``compile``, the compilation in the warm-up of
#: engine-fast or ours-fast; ``train``, training the section's model (once); per contender its
#: rate: samples per second (certification) or loader batches per second (training); for the
#: CUDA tests, the seconds of the whole run. The CUDA figures are guesses for one H100 or H200
#: from the H100 figures of the issue that set the targets (nothing here was measured on a GPU
#: yet: correct them from the ``wall_seconds`` and ``estimate`` a GPU run stores); the CPU
#: figures are those of the idle 2-core development machine (two threads, from the CPU tables
#: of docs/benchmarks.rst), for the ``--quick`` sizes; a loaded machine takes several times
#: longer, which :attr:`Planner.scale` then accounts for.
COSTS = {
    "cuda": {
        "start": 10.0,
        TESTS: {"pytest": 90.0},
        "certify-resnet110": {"compile": 90.0, "engine": 43_000, "engine-fast": 150_000, "art": 10_000,
                              "loop": 40_000, "engine-bf16": 82_000},
        "train-resnet110": {"compile": 150.0, "ours-fast": 3.0, "reference": 1.0, "ours": 1.2, "ours-amp": 2.0},
        "certify-resnet50": {"compile": 60.0, "engine-fast": 20_000, "engine": 2_700, "engine-bf16": 6_000,
                             "loop": 2_600},
        "agreement-digits": {"train": 40.0, "compile": 30.0, "engine": 1_500_000, "engine-fast": 3_000_000,
                             "engine-bf16": 1_500_000},
        "agreement-digits32": {"train": 40.0, "compile": 45.0, "engine": 250_000, "engine-fast": 600_000,
                               "engine-bf16": 400_000},
    },
    "cpu": {
        "start": 7.0,
        TESTS: {"pytest": 15.0},
        "certify-resnet110": {"compile": 90.0, "engine": 150, "engine-fast": 400, "art": 150, "loop": 150,
                              "engine-bf16": 400},
        "train-resnet110": {"compile": 300.0, "ours-fast": 3.0, "reference": 1.8, "ours": 1.8, "ours-amp": 3.0},
        "certify-resnet50": {"compile": 200.0, "engine-fast": 30, "engine": 12, "engine-bf16": 30, "loop": 12},
        "agreement-digits": {"train": 25.0, "compile": 80.0, "engine": 100_000, "engine-fast": 100_000,
                             "engine-bf16": 80_000},
        "agreement-digits32": {"train": 30.0, "compile": 100.0, "engine": 900, "engine-fast": 900,
                               "engine-bf16": 900},
    },
}

#: Issue targets on one H100: (section, contender) -> (figure, at most).
TARGETS = {
    ("certify-resnet110", "engine-fast"): ("seconds_per_image", 0.35),
    ("certify-resnet50", "engine-fast"): ("seconds_per_image", 3.0),
    ("train-resnet110", "ours-fast"): ("seconds_per_epoch", 60.0),
}


# ----------------------------------------------------------------------------- arguments and estimates


def options_of(name: str, quick: bool) -> list[str]:
    """A section's script arguments, without contenders and size: the GPU ones, with ``--quick``'s
    replacing the options they name."""
    spec = SECTIONS[name]
    if not quick:
        return list(spec.options)
    replaced, kept, skipping = {a for a in spec.quick if a.startswith("--")}, [], False
    for argument in spec.options:
        if argument.startswith("--"):
            skipping = argument in replaced
        if not skipping:
            kept.append(argument)
    return kept + list(spec.quick)


def arguments(name: str, quick: bool, contenders: list[str], size: int) -> list[str]:
    """The script arguments that run ``contenders`` of section ``name`` at ``size``."""
    spec = SECTIONS[name]
    chosen = [*options_of(name, quick), spec.size, str(size)]
    if spec.script is certify:
        amp = [c.split("-", 1)[1] for c in contenders if c in ("engine-bf16", "engine-fp16")]
        plain = [{"engine-fast": "fast"}.get(c, c) for c in contenders if c not in ("engine-bf16", "engine-fp16")]
        return [*chosen, "--contenders", *plain, "--amp", *amp]
    return [*chosen, "--contenders", *contenders]


def unavailable(contender: str) -> str | None:
    """Why ``contender`` cannot run here (the ART contender without ART installed), or None."""
    if contender == "art" and importlib.util.find_spec("art") is None:
        return "skipped: ART (adversarial-robustness-toolbox) is not installed"
    return None


def models_dir(output: Path) -> Path:
    """Where the agreement sections keep their trained models."""
    return output / "models"


@dataclass
class Plan:
    """What a section runs within the seconds it was given: contenders with their estimated
    seconds, size, script arguments, estimated seconds in all (a trained model's included), and
    the contenders left out with why."""

    contenders: dict[str, float]
    size: int | None
    argv: list[str]
    estimate: float
    left_out: dict[str, str] = field(default_factory=dict)


@dataclass
class Planner:
    """Estimates from :data:`COSTS` for one run (device type, ``--quick``, output folder), and the
    plans that fit a number of seconds.

    ``scale`` multiplies every estimate: how much longer than estimated the sections run so
    far took (:meth:`took`), never below 1, so that a slow or loaded machine shrinks what comes
    next instead of having it stopped at the end of the budget.
    """

    device: str
    quick: bool
    output: Path
    scale: float = 1.0
    _taken: float = 0.0
    _estimated: float = 0.0

    def took(self, seconds: float, estimated: float) -> None:
        """Record that a section estimated (with the current scale) at ``estimated`` seconds took ``seconds``."""
        self._taken, self._estimated = self._taken + seconds, self._estimated + estimated / self.scale
        self.scale = max(1.0, self._taken / self._estimated)

    def estimate(self, name: str, contender: str, argv: list[str]) -> float:
        """Estimated seconds of one contender of section ``name`` run with the script arguments ``argv``."""
        if name == TESTS:
            return self.scale * COSTS[self.device][TESTS]["pytest"]
        costs, spec = COSTS[self.device][name], SECTIONS[name]
        config = vars(spec.script.build_parser().parse_args(argv))
        fast = contender in COMPILING
        if spec.script is certify:
            per_image = config["n0"] + config["n"]
            images = config["images"]
            if contender in certify.SLOW and config["slow_images"]:
                images = min(images, config["slow_images"])
            warm_up = per_image if fast else 2 * config["batch"]
            work = (warm_up + images * per_image) / costs[contender]
        else:
            work = (1 + config["batches"]) / costs[contender]  # the warm-up batch and the timed ones
        return self.scale * (COSTS[self.device]["start"] + (costs["compile"] if fast else 0.0) + work)

    def setup(self, name: str, argv: list[str]) -> float:
        """Estimated seconds before a section's contenders start: training its model unless already trained."""
        spec = SECTIONS.get(name)
        if spec is None or spec.script is not certify:
            return 0.0
        config = vars(certify.build_parser().parse_args(argv))
        if not config["trained"] or trained_path(config["trained"], models_dir(self.output),
                                                 config["trained_epochs"]).exists():
            return 0.0
        return self.scale * (COSTS[self.device]["start"] + COSTS[self.device][name]["train"])

    def _planned(self, name: str, contenders: list[str], size: int | None, left_out: dict[str, str]) -> Plan:
        """``contenders`` at ``size``. They run in priority order, except that the compiling one runs
        last (and certification's autocast ones after it), so that a compilation that takes longer
        than estimated costs the others of its section nothing."""
        order = sorted(contenders, key=lambda contender: contender in COMPILING)
        argv = [] if size is None else arguments(name, self.quick, order, size)
        seconds = {c: self.estimate(name, c, argv) for c in contenders}
        return Plan(seconds, size, argv, self.setup(name, argv) + sum(seconds.values()), left_out)

    def contenders(self, name: str) -> tuple[str, ...]:
        return ("pytest",) if name == TESTS else SECTIONS[name].contenders

    def plan(self, name: str, seconds: float | None) -> Plan:
        """The run of section ``name`` that fits in ``seconds`` (None: no limit, the largest size).

        First the contenders, in priority order, that fit at the smallest size; then the
        largest size at which they fit. A plan without contenders: the section does not fit (its
        estimate is then the least it would need).
        """
        missing = {c: why for c in self.contenders(name) if (why := unavailable(c))}
        everything = [c for c in self.contenders(name) if c not in missing]
        sizes = (None,) if name == TESTS else SECTIONS[name].quick_sizes if self.quick else SECTIONS[name].sizes
        if seconds is None:
            return self._planned(name, everything, sizes[0], missing)
        smallest = self._planned(name, everything, sizes[-1], {}).argv
        chosen, left_out, costs = [], dict(missing), []
        setup = total = self.setup(name, smallest)
        for contender in everything:
            cost = self.estimate(name, contender, smallest)
            costs.append(cost)
            if total + cost <= seconds:
                chosen.append(contender)
                total += cost
            else:
                left_out[contender] = f"estimated {cost:.0f} s, {max(seconds - total, 0):.0f} s left"
        for size in sizes:
            if chosen and (planned := self._planned(name, chosen, size, left_out)).estimate <= seconds:
                return planned
        return Plan({}, None, [], setup + min(costs), left_out)  # the least it would need

    def minimum(self, name: str, seconds: float) -> float:
        """Estimated seconds of a section's smallest useful run: its core contenders at its smallest
        size, leaving out any that alone would not fit in ``seconds``."""
        core = list(self.contenders(name)[: 1 if name == TESTS else SECTIONS[name].core])
        smallest = None if name == TESTS else (SECTIONS[name].quick_sizes if self.quick else SECTIONS[name].sizes)[-1]
        planned = self._planned(name, core, smallest, {})
        return planned.estimate - sum(cost for cost in planned.contenders.values() if cost > seconds)

    def allotment(self, left: float, name: str, later: list[str]) -> float:
        """Seconds section ``name`` may use of ``left``: what remains after reserving the smallest
        useful runs of the ``later`` sections, in order, as long as they fit beside its own."""
        reserve = 0.0
        own = self.minimum(name, left)
        for section in later:
            needed = self.minimum(section, left)
            if own + reserve + needed > left:
                break
            reserve += needed
        return left - reserve


# ----------------------------------------------------------------------------- running the sections


def run_tests(output: Path, time_limit: float | None) -> dict:
    """``pytest -m cuda`` (compile tests on) in a process group of its own, stopped after
    :data:`TESTS_LIMIT` seconds or ``time_limit``; every outcome comes from :mod:`_test_report`."""
    outcomes, log = output / f"{TESTS}.jsonl", output / f"{TESTS}.log"
    outcomes.unlink(missing_ok=True)
    limit = TESTS_LIMIT if time_limit is None else min(TESTS_LIMIT, time_limit)
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "_test_report", "-p", "no:cacheprovider", "-q",
               "-rs", "--continue-on-collection-errors", "tests"]
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CATRS_TEST_COMPILE": "1", "CATRS_TEST_REPORT": str(outcomes), "PYTHONPATH": path}
    began, stopped = time.monotonic(), None
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, cwd=HERE.parent, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=max(limit, 0.0))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # pytest and the processes its tests started
            except ProcessLookupError:  # ended meanwhile
                pass
            process.wait()
            stopped = f"stopped by the time limit after {limit:.0f} s"
    tests = [json.loads(line) for line in outcomes.read_text().splitlines()] if outcomes.exists() else []
    outcomes.unlink(missing_ok=True)
    return {"command": "CATRS_TEST_COMPILE=1 python -m pytest -m cuda tests", "returncode": process.returncode,
            "stopped": stopped, "seconds": time.monotonic() - began,
            "counts": dict(Counter(test["outcome"] for test in tests)), "tests": tests}


def run_section(name: str, chosen: Plan, args: argparse.Namespace, time_limit: float | None) -> dict:
    """Run one benchmark section as planned and return what the tables need (JSON-serialisable)."""
    script = SECTIONS[name].script
    argv = [*chosen.argv, "--device", args.device, "--repeats", str(args.repeats)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if script is certify:
        argv += ["--trained-dir", str(models_dir(Path(args.output)))]
    options = {**vars(script.build_parser().parse_args(argv)), "time_limit": time_limit, "expected": chosen.contenders}
    began = time.monotonic()
    results, left_out = script.run(options)
    script.report(results, options, left_out)
    figures = {}
    for contender, values in results.items():
        figures[contender] = {key: value for key, value in values.items() if key not in ("predictions", "radii")}
        if script is train:
            figures[contender]["seconds_per_epoch"] = train.seconds_per_epoch(values, options)
    stored = {"command": f"python benchmarks/{script.__name__}.py {' '.join(argv)}", "figures": figures,
              "left_out": {**chosen.left_out, **left_out}, "seconds": time.monotonic() - began,
              "estimate": chosen.estimate, "size": {SECTIONS[name].size: chosen.size}}
    if script is certify:
        stored["agreement"] = certify.agreements(results)
    return stored


def settings(name: str, args: argparse.Namespace) -> dict:
    """What a stored section must have been measured with to be reused: the device and ``--quick``."""
    return {"section": name, "device": describe_device(torch.device(args.device)), "quick": bool(args.quick)}


def stored_section(path: Path, name: str, args: argparse.Namespace) -> dict | None:
    """The section stored at ``path`` (checked against :func:`settings`) if it is complete, else None.

    Complete: the CUDA tests ran to their end; every contender of a benchmark section has
    figures, or failed, or cannot run here. A section cut short by its budget is measured again.
    """
    if args.rerun or not path.exists():
        return None
    data = provenance.read_json(path, "stored section")
    provenance.check(data.get("settings"), settings(name, args), path, "stored section",
                     "pass --rerun to measure it again, or choose another --output")
    if name == TESTS:
        return None if data["stopped"] else data
    return data if all(why.startswith(("failed", "skipped")) for why in data["left_out"].values()) else None


# ----------------------------------------------------------------------------- the tables


def render(stored: dict, states: dict, args: argparse.Namespace) -> str:
    """The sections' state, the targets and every stored section's tables, in reStructuredText."""
    lines = ["Sections:", ""]
    rows = [["section", "state", "seconds", "estimated"]]
    for name in ORDER:
        data = stored.get(name, {})
        seconds = f"{data['seconds']:.0f}" if "seconds" in data else ""
        guess = f"{data['estimate']:.0f}" if "estimate" in data else ""
        rows.append([name, states.get(name, "not selected"), seconds, guess])
    lines += _table(rows)
    lines += ["", "Targets:", ""]
    rows = [["target", "measured", "verdict"]]
    for (section, contender), (key, limit) in TARGETS.items():
        rows.append([f"{section} {contender} <= {limit:g} {_unit(key)}", *_verdict(section, contender, stored, args)])
    lines += _table(rows)
    if TESTS in stored:
        lines += _tests_lines(stored[TESTS])
    for section in SECTIONS:
        if section in stored:
            lines += _section_lines(section, stored[section])
    return "\n".join(lines)


def _unit(key: str) -> str:
    return {"seconds_per_image": "s/image", "seconds_per_epoch": "s/epoch"}[key]


def _verdict(section: str, contender: str, stored: dict, args: argparse.Namespace) -> list[str]:
    data = stored.get(section)
    if data is None:
        return ["", "not reached within the budget"]
    figures = data["figures"].get(contender)
    if figures is None:
        why = data["left_out"].get(contender, "not run")
        return ["", "failed" if why.startswith("failed") else "not reached within the budget"]
    key, limit = TARGETS[section, contender]
    value = figures[key]
    measured = f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    if key == "seconds_per_epoch":
        measured += f" (extrapolated from {data['size']['--batches']} batches)"
    if args.quick or torch.device(args.device).type != "cuda":
        return [measured, "not judged (" + ("--quick sizes" if args.quick else "not a GPU") + ")"]
    return [measured, "met" if value <= limit else "NOT met"]


def _tests_lines(data: dict) -> list[str]:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(data["counts"].items())) or "no tests ran"
    lines = ["", f"{TESTS}::", "", f"   {data['command']}", "", f"{counts} in {data['seconds']:.0f} s"
             + (f"; {data['stopped']}" if data["stopped"] else "") + "."]
    reasons = Counter(t["message"] for t in data["tests"] if t["outcome"] == "skipped")
    lines += [f"Skipped: {n} ({reason})." for reason, n in reasons.items()]
    lines += [f"{t['outcome'].upper()}: {t['test']}: {t['message']}" for t in data["tests"]
              if t["outcome"] in ("failed", "error")]
    return lines


def _section_lines(section: str, data: dict) -> list[str]:
    lines = ["", f"{section}::", "", f"   {data['command']}", ""]
    figures = data["figures"]
    if figures:
        lines += [f"Device: {next(iter(figures.values()))['device']}.", ""]
    if figures and SECTIONS[section].script is certify:
        rows = [["contender", "s/image", "samples/s", "peak MiB", "time / engine", "compile s", "process s"]]
        base = figures.get("engine", {}).get("seconds_per_image")
        for name, f in _in_priority(section, figures):
            rows.append([name, f"{f['seconds_per_image']:.3f}", f"{f['samples_per_second']:,.0f}",
                         f"{f['memory_mib']:.0f}", f"{f['seconds_per_image'] / base:.2f}" if base else "n/a",
                         f"{f['compile_seconds'] + f['compile_seconds_in_run']:.0f}", f"{f['wall_seconds']:.0f}"])
        lines += _table(rows)
        if data["agreement"]:
            rows = [["against engine", "identical predictions", "mean |radius diff.|", "max |radius diff.|"]]
            for name, a in data["agreement"].items():
                rows.append([name, f"{a['identical']} / {a['images']}", f"{a['mean']:.2e}", f"{a['max']:.2e}"])
            lines += [""] + _table(rows)
    elif figures:
        rows = [["contender", "s/batch", "s/epoch (extrapolated)", "speed-up vs reference", "mean loss", "warm-up s",
                 "process s"]]
        reference = figures.get("reference", {}).get("seconds_per_batch")
        for name, f in _in_priority(section, figures):
            rows.append([name, f"{f['seconds_per_batch']:.3f}", f"{f['seconds_per_epoch']:,.0f}",
                         f"{reference / f['seconds_per_batch']:.2f}" if reference else "n/a", f"{f['loss']:.4f}",
                         f"{f['warm_up_seconds']:.0f}", f"{f['wall_seconds']:.0f}"])
        lines += _table(rows)
    for name, why in data["left_out"].items():
        lines.append(f"{name}: not run ({why}).")
    return lines


def _in_priority(section: str, figures: dict) -> list[tuple[str, dict]]:
    return sorted(figures.items(), key=lambda item: SECTIONS[section].contenders.index(item[0]))


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    body = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return [rule, body[0], rule, *body[1:], rule]


# ----------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--output", default="gpu-benchmarks", help="directory of the stored sections, the table "
                                                                    "and the trained models (default: gpu-benchmarks)")
    parser.add_argument("--budget", type=float, default=None,
                        help="end within this many seconds, sizing and skipping sections to fit (default: no budget, "
                             "every section at the GPU table's sizes)")
    parser.add_argument("--sections", nargs="+", choices=ORDER, default=list(ORDER),
                        help="sections to run, always in the order listed in the help (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per section (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rerun", action="store_true", help="measure sections again even if stored")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= MARGIN:
        parser.error(f"--budget must be more than {MARGIN:g} seconds, got {args.budget:g}")
    args.device = str(resolve_device(args.device))
    out = Path(args.output)
    planner = Planner("cuda" if torch.device(args.device).type == "cuda" else "cpu", args.quick, out)
    out.mkdir(parents=True, exist_ok=True)
    end = None if args.budget is None else STARTED + args.budget - MARGIN
    selected = [name for name in ORDER if name in args.sections]
    try:
        stored = {name: data for name in selected if (data := stored_section(out / f"{name}.json", name, args))}
    except ValueError as error:  # a stored section of another device or run (ProvenanceError), or a damaged one
        parser.error(str(error))
    states, broken = {name: "stored by an earlier run" for name in stored}, False
    for position, name in enumerate(selected):
        if name in stored:
            continue
        path = out / f"{name}.json"
        left = None if end is None else end - time.monotonic()
        later = [section for section in selected[position + 1:] if section not in stored]
        seconds = None if left is None else planner.allotment(left, name, later)
        chosen = planner.plan(name, seconds)
        if not chosen.contenders:
            states[name] = (f"not reached within the budget (needs at least {chosen.estimate:.0f} s, "
                            f"{max(seconds, 0):.0f} s left)")
            print(f"== {name}: {states[name]}", file=sys.stderr, flush=True)
            continue
        print(f"== {name} (estimated {chosen.estimate:.0f} s"
              + ("" if left is None else f" of {seconds:.0f} s given, {left:.0f} s left") + ")",
              file=sys.stderr, flush=True)
        try:  # the section stops when the seconds it was given are up, keeping the later sections' reserve
            if name == TESTS:
                data = {**run_tests(out, seconds), "estimate": chosen.estimate}
            else:
                data = run_section(name, chosen, args, seconds)
        except Exception:  # noqa: BLE001 -- one broken section must not cost the others
            traceback.print_exc()
            states[name], broken = f"failed: {traceback.format_exc().strip().splitlines()[-1][:200]}", True
            continue
        data["settings"] = settings(name, args)
        write_atomic(path, json.dumps(data, indent=1) + "\n")
        stored[name] = data
        states[name] = _state(name, data)
        planner.took(data["seconds"], chosen.estimate)
        broken = broken or (name == TESTS and bool({"failed", "error"} & set(data["counts"])))
    table = render(stored, states, args)
    write_atomic(out / "table.rst", table + "\n")
    print(table)
    budget = "" if args.budget is None else f" of a budget of {args.budget:.0f} s"
    print(f"\nended after {time.monotonic() - STARTED:.0f} s{budget}; figures in {out}", file=sys.stderr)
    return 1 if broken else 0


def _state(name: str, data: dict) -> str:
    if name == TESTS:
        return "ran" + (f", {data['stopped']}" if data["stopped"] else "")
    left = len(data["left_out"])
    return "ran" + (f", {left} contender{'s' * (left > 1)} left out" if left else "")


if __name__ == "__main__":
    sys.exit(main())
