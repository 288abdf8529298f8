"""The whole benchmark table of docs/benchmarks.rst in one command: certification, agreement, training.

Sections (each runs ``benchmarks/certify.py`` or ``benchmarks/train.py`` with the arguments in
:data:`SECTIONS`, every contender in a fresh process, prints that script's report and stores
its figures in ``OUTPUT/SECTION.json``; a rerun skips the sections already stored, so a run cut
short, e.g. by a time limit per command, continues where it stopped):

* ``certify-resnet110``: CIFAR ResNet-110 (seeded random weights: speed only), N0 = 100,
  N = 100,000, 5 images: engine (fp32), ART, per-image loop, engine-bf16 (autocast and
  channels_last), engine-fast (``Smooth(fast=True)``, batch ``auto``). Target: engine-fast in
  at most 0.35 s per image.
* ``certify-resnet50``: ImageNet ResNet-50 (timm, random weights), N = 100,000, 2 images:
  engine, loop, engine-bf16, engine-fast (ART cannot hold N = 100,000 ImageNet noises on the
  host). Target: engine-fast in at most 3 s per image.
* ``agreement-digits``: the digits CNN trained here (Gaussian, sigma 0.25), all 359 test
  images, N = 100,000: engine-fast and engine-bf16 against the exact engine.
* ``agreement-digits32``: a CIFAR ResNet-20 trained here on CIFAR-shaped digits (3 x 32 x 32),
  all 359 test images, N = 10,000: the same comparison.
* ``train-resnet110``: CAT-RS on CIFAR ResNet-110, batch 256, M = 4, T = 4, 20 loader batches:
  the reference-style loop, ours (fp32), ours-amp (bf16, channels_last, fused SGD), ours-fast
  (:func:`catrs_plugin.train.loop.fast_config`: also ``torch.compile`` with CUDA graphs).
  Target: ours-fast in at most 60 s per epoch (extrapolated from the timed batches).

At the end it prints the tables in reStructuredText, with every target marked met or not met
by the measured figure. On a GPU::

    pip install ".[benchmarks]"
    python benchmarks/gpu_table.py --device cuda --output gpu-benchmarks

``--quick`` shrinks every size so that the script can be checked on a CPU in minutes (its
figures say nothing about a GPU, and the targets are not judged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import certify  # noqa: E402
import train  # noqa: E402

#: Section -> (script, its arguments on a GPU, the arguments that replace them with --quick).
SECTIONS = {
    "certify-resnet110": (certify, [
        "--model", "cifar_resnet110", "--images", "5", "--n", "100000", "--batch", "10000", "--fast-batch", "auto",
        "--contenders", "engine", "art", "loop", "fast", "--amp", "bf16", "--channels-last",
    ], ["--images", "1", "--n", "1000", "--batch", "500", "--fast-batch", "500", "--contenders", "engine", "fast",
        "--amp"]),
    "certify-resnet50": (certify, [
        "--model", "resnet50", "--images", "2", "--n", "100000", "--batch", "1000", "--fast-batch", "auto",
        "--contenders", "engine", "loop", "fast", "--amp", "bf16", "--channels-last",
    ], ["--images", "1", "--n", "100", "--batch", "100", "--fast-batch", "100", "--contenders", "engine", "fast",
        "--amp"]),
    "agreement-digits": (certify, [
        "--trained", "digits", "--images", "359", "--n", "100000", "--batch", "20000", "--fast-batch", "auto",
        "--contenders", "engine", "fast", "--amp", "bf16",
    ], ["--images", "359", "--n", "2000", "--batch", "2100", "--fast-batch", "2100"]),
    "agreement-digits32": (certify, [
        "--trained", "digits32", "--images", "359", "--n", "10000", "--batch", "10000", "--fast-batch", "auto",
        "--contenders", "engine", "fast", "--amp", "bf16", "--channels-last",
    ], ["--images", "100", "--n", "500", "--batch", "600", "--fast-batch", "600"]),
    "train-resnet110": (train, [
        "--model", "cifar_resnet110", "--batch", "256", "--batches", "20", "--workers", "4",
    ], ["--model", "cifar_resnet20", "--batch", "16", "--batches", "1", "--t", "1", "--workers", "0"]),
}

#: Issue targets on one H100: (section, contender) -> (figure, at most).
TARGETS = {
    ("certify-resnet110", "engine-fast"): ("seconds_per_image", 0.35),
    ("certify-resnet50", "engine-fast"): ("seconds_per_image", 3.0),
    ("train-resnet110", "ours-fast"): ("seconds_per_epoch", 60.0),
}


def arguments(section: str, quick: bool) -> list[str]:
    """The script arguments of ``section``: the GPU ones, with ``--quick``'s replacing the options they name."""
    _, full, small = SECTIONS[section]
    if not quick:
        return list(full)
    replaced, kept, skipping = {a for a in small if a.startswith("--")}, [], False
    for argument in full:
        if argument.startswith("--"):
            skipping = argument in replaced
        if not skipping:
            kept.append(argument)
    return kept + small


def measure(section: str, args: argparse.Namespace) -> dict:
    """Run one section and return what the tables need (JSON-serialisable)."""
    script = SECTIONS[section][0]
    argv = [*arguments(section, args.quick), "--device", args.device, "--repeats", str(args.repeats)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if script is certify:
        argv += ["--trained-dir", str(Path(args.output) / "models")]
    options = vars(script.build_parser().parse_args(argv))
    results = script.run(options)
    script.report(results, options)
    figures = {}
    for name, values in results.items():
        figures[name] = {key: value for key, value in values.items() if key not in ("predictions", "radii")}
        if script is train:
            figures[name]["seconds_per_epoch"] = train.seconds_per_epoch(values, options)
    stored = {"command": f"python benchmarks/{script.__name__}.py {' '.join(argv)}", "figures": figures}
    if script is certify:
        stored["agreement"] = certify.agreements(results)
    return stored


def render(stored: dict, quick: bool) -> str:
    """reStructuredText tables of every stored section."""
    lines = []
    for section, data in stored.items():
        lines += ["", f"{section}::", "", f"   {data['command']}", ""]
        figures = data["figures"]
        device = next(iter(figures.values()))["device"]
        lines.append(f"Device: {device}.")
        lines.append("")
        if SECTIONS[section][0] is certify:
            rows = [["contender", "s/image", "samples/s", "peak MiB", "time / engine", "compile s"]]
            base = figures["engine"]["seconds_per_image"]
            for name, f in figures.items():
                rows.append([name + _target(section, name, f, quick), f"{f['seconds_per_image']:.3f}",
                             f"{f['samples_per_second']:,.0f}", f"{f['memory_mib']:.0f}",
                             f"{f['seconds_per_image'] / base:.2f}", f"{f['compile_seconds']:.0f}"])
            lines += _table(rows)
            if data["agreement"]:
                rows = [["against engine", "identical predictions", "mean |radius diff.|", "max |radius diff.|"]]
                for name, a in data["agreement"].items():
                    rows.append([name, f"{a['identical']} / {a['images']}", f"{a['mean']:.2e}", f"{a['max']:.2e}"])
                lines += [""] + _table(rows)
        else:
            rows = [["contender", "s/batch", "s/epoch (extrapolated)", "speed-up vs reference", "mean loss"]]
            reference = figures.get("reference", {}).get("seconds_per_batch")
            for name, f in figures.items():
                speedup = f"{reference / f['seconds_per_batch']:.2f}" if reference else "n/a"
                rows.append([name + _target(section, name, f, quick), f"{f['seconds_per_batch']:.3f}",
                             f"{f['seconds_per_epoch']:,.0f}", speedup, f"{f['loss']:.4f}"])
            lines += _table(rows)
    return "\n".join(lines)


def _target(section: str, name: str, figures: dict, quick: bool) -> str:
    if (section, name) not in TARGETS or quick:
        return ""
    key, limit = TARGETS[section, name]
    return f" (target <= {limit:g}: {'met' if figures[key] <= limit else 'NOT met'})"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    body = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return [rule, body[0], rule, *body[1:], rule]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--output", default="gpu-benchmarks", help="directory of the stored sections and the "
                                                                    "trained models (default: gpu-benchmarks)")
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per section (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rerun", action="store_true", help="measure sections again even if stored")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stored = {}
    for section in args.sections:
        path = out / f"{section}.json"
        if args.rerun or not path.exists():
            print(f"== {section}", file=sys.stderr, flush=True)
            path.write_text(json.dumps(measure(section, args), indent=1))
        stored[section] = json.loads(path.read_text())
    print(render(stored, args.quick))


if __name__ == "__main__":
    main()
