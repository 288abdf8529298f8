"""Certification throughput: our engine against ART and a per-image loop in the style of Cohen et al.

Contenders, all on the same model (seeded random weights, ``--checkpoint``, or a model trained
here with ``--trained``), the same inputs, N0, N, alpha, sigma and forward batch size:

* ``engine``: :class:`catrs_plugin.certify.smoothing.Smooth` with its defaults (fp32, exact);
* ``art``: ``PyTorchRandomizedSmoothing.certify`` of the Adversarial Robustness Toolbox
  (numpy noise on the host, one input at a time, logits copied back per batch);
* ``loop``: CERTIFY as Cohen et al. describe it, one image at a time: repeat the image into a
  batch, add ``torch.randn`` noise on the device, take the argmax, count on the host;
* ``engine-fast`` (``fast`` in ``--contenders``): the engine's fast path, ``Smooth(fast=True)``
  (bf16, batch norm folded, channels_last, ``torch.compile`` with freezing, CUDA graphs on
  CUDA), with ``--fast-batch`` samples per forward pass (``auto``: the largest that fits);
* ``engine-bf16``, ``engine-fp16`` (``--amp``): the engine under autocast only, plus
  ``--channels-last`` / ``--compile`` when given.

``--contenders`` names the ones to run (``engine`` too: without it, figures relative to the
engine and agreements are not reported); ``--slow-images K`` lets ``art`` and ``loop``
certify only the first K images (their seconds per image stay comparable), and
``--time-limit`` stops the whole run after that many seconds (see ``_common.run_contenders``).

The agreement of every ``engine-*`` contender with ``engine`` (the same noise, only the
forward pass rounds differently) is reported: identical predictions and radius differences.
Agreement means something on a trained model only: ``--trained digits`` (the digits CNN) and
``--trained digits32`` (a CIFAR ResNet-20 on CIFAR-shaped digits) train one with Gaussian
augmentation at sigma 0.25 into ``--trained-dir`` (once) and certify its test images.

Each contender runs in a fresh process after a warm-up call on one image (for ``engine-fast``,
with the run's N0 and N, which compiles the batch shapes the run uses; the compile time of
the warm-up and any compilation left in the timed run are reported). With ``--repeats R`` all
contenders run in turn R times and each one's fastest round counts, which evens out the load
of a shared machine. Reported: seconds per image, noisy samples per second, achieved TFLOP/s
(FLOPs of one forward pass from ``torch.utils.flop_counter``, convolutions and matrix
products only) and its share of the device's peak, peak memory (CUDA: allocated device
memory; CPU: peak resident set of the process, libraries included), and each contender's time
relative to the engine's.

Example (CPU, a few minutes on 2 cores)::

    python benchmarks/certify.py --device cpu --model cifar_resnet110 --images 2 --n 1000

On one H100 (the issue's targets; ``benchmarks/gpu_table.py`` runs this and everything else)::

    python benchmarks/certify.py --device cuda --model cifar_resnet110 --images 5 --n 100000 --batch 10000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MODELS,
    TRAINED,
    OutOfTime,
    add_time_limit_argument,
    build_model,
    deadline,
    describe_device,
    flops_per_sample,
    isolated,
    load_inputs,
    peak_tflops,
    run_contenders,
    time_left,
    timed,
    trained_checkpoint,
    trained_path,
)

from catrs_plugin.certify.smoothing import Smooth  # noqa: E402
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound  # noqa: E402
from catrs_plugin.cli._common import batch_size_argument, resolve_device  # noqa: E402
from catrs_plugin.train.loop import AMP_DTYPES  # noqa: E402

#: Contenders that ``--slow-images`` restricts to the first images.
SLOW = ("art", "loop")


def loop_certify(model, x, n0, n, alpha, sigma, batch, classes, device):
    """CERTIFY one image at a time, sampling the way Cohen et al.'s algorithm is usually written."""

    def counts(image, num):
        total = np.zeros(classes, dtype=np.int64)
        remaining = num
        with torch.no_grad():
            while remaining > 0:
                size = min(batch, remaining)
                remaining -= size
                repeated = image.unsqueeze(0).repeat(size, *([1] * image.ndim))
                noise = torch.randn_like(repeated) * sigma
                top = model(repeated + noise).argmax(1)
                total += np.bincount(top.cpu().numpy(), minlength=classes)
        return total

    predictions, radii = [], []
    for image in torch.as_tensor(x, device=device):
        selected = int(counts(image, n0).argmax())
        p_lower = float(lower_confidence_bound(counts(image, n)[selected], n, alpha))
        predictions.append(selected if p_lower >= 0.5 else -1)
        radii.append(float(certified_radius(p_lower, sigma)) if p_lower >= 0.5 else 0.0)
    return np.array(predictions), np.array(radii)


def art_certify(model, x, n0, n, alpha, sigma, batch, classes, device):
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    smoothed = PyTorchRandomizedSmoothing(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=classes,
        device_type="gpu" if device.type == "cuda" else "cpu", sample_size=n0, scale=sigma, alpha=alpha,
    )
    return smoothed.certify(x, n=n, batch_size=batch)


def engine_certify(model, x, n0, n, alpha, sigma, batch, classes, device, amp=None, channels_last=False,
                   compile_mode=None, fast=False):
    smooth = Smooth(model, classes, sigma, batch_size=batch, seed=0, fast=fast, autocast_dtype=AMP_DTYPES.get(amp),
                    channels_last=channels_last, compile_mode=compile_mode)
    return smooth.certify(x, n0, n, alpha), smooth.compile_seconds


def inputs(config, shape):
    if config["dataset"]:
        x = load_inputs(config["dataset"], "test", config["data_dir"])[0]
        return np.ascontiguousarray(x[: config["images"]], dtype=np.float32)
    return np.random.default_rng(0).random((config["images"], *shape), dtype=np.float32)


def measure(config, contender):
    """Run one contender in this (fresh) process; return its figures and results."""
    torch.set_num_threads(config["threads"] or torch.get_num_threads())
    device = torch.device(config["device"])
    if config["checkpoint"]:
        from catrs_plugin.train.checkpoint import load_checkpoint

        model = load_checkpoint(config["checkpoint"], map_location=device)
        x = inputs(config, None)
        shape = tuple(x.shape[1:])
        with torch.inference_mode():
            classes = int(model(torch.zeros((1, *shape), device=device)).shape[1])
    else:
        model, shape, classes = build_model(config["model"], device)
        x = inputs(config, shape)
    flops = flops_per_sample(model, shape, device)
    kind, _, variant = contender.partition("-")
    if kind in SLOW and config["slow_images"]:
        x = x[: config["slow_images"]]
    options, batch, precision = {}, config["batch"], variant or "fp32"
    if variant == "fast":
        options, batch, precision = {"fast": True}, config["fast_batch"], "bf16"
    elif variant:
        options = {"amp": variant, "channels_last": config["channels_last"], "compile_mode": config["compile"]}
    function = {"engine": engine_certify, "art": art_certify, "loop": loop_certify}[kind]
    common = (config["alpha"], config["sigma"], batch, classes, device)
    warm = (config["n0"], config["n"]) if variant == "fast" else (config["batch"], config["batch"])
    warm_result = function(model, x[:1], *warm, *common, **options)
    # engine_certify also returns the seconds spent compiling per shape (copied before the timed run adds to it)
    compiled = dict(warm_result[1]) if kind == "engine" else {}
    result, seconds, memory = timed(device, lambda: function(model, x, config["n0"], config["n"], *common, **options))
    (predictions, radii), run_compiled = result if kind == "engine" else (result, {})
    samples = len(x) * (config["n0"] + config["n"])
    peak, source = peak_tflops(device, precision, config["peak_tflops"])
    achieved = flops * samples / seconds / 1e12
    return {
        "contender": contender, "seconds_per_image": seconds / len(x), "samples_per_second": samples / seconds,
        "tflops": achieved, "peak": peak, "peak_source": source, "memory_mib": memory, "gflops_per_sample":
        flops / 1e9, "predictions": np.asarray(predictions), "radii": np.asarray(radii, dtype=np.float64),
        "device": describe_device(device), "model": config["checkpoint"] or config["model"],
        "compile_seconds": sum(compiled.values()),
        "compile_seconds_in_run": sum(v for k, v in run_compiled.items() if k not in compiled),
    }


def report(results, config, left_out=None):
    for name, why in (left_out or {}).items():
        print(f"{name}: no figures ({why})")
    if not results:
        return
    first, base = next(iter(results.values())), results.get("engine")
    print(f"device: {first['device']}")
    print(f"model: {first['model']}, {first['gflops_per_sample']:.4g} GFLOP per forward "
          f"sample; {config['images']} images, N0={config['n0']}, N={config['n']}, alpha={config['alpha']}, "
          f"sigma={config['sigma']}, batch={config['batch']}")
    print(f"{'contender':<13}{'s/image':>10}{'samples/s':>12}{'TFLOP/s':>10}{'% peak':>8}{'peak MiB':>10}"
          f"{'time / engine':>15}")
    for name, figures in results.items():
        share = f"{100 * figures['tflops'] / figures['peak']:.1f}" if figures["peak"] else "n/a"
        relative = f"{figures['seconds_per_image'] / base['seconds_per_image']:.2f}x" if base else "n/a"
        print(f"{name:<13}{figures['seconds_per_image']:>10.3f}{figures['samples_per_second']:>12.0f}"
              f"{figures['tflops']:>10.4f}{share:>8}{figures['memory_mib']:>10.0f}{relative:>15}")
    print(f"peak TFLOP/s: {first['peak_source']}")
    for name, figures in results.items():
        if figures["compile_seconds"] or figures["compile_seconds_in_run"]:
            print(f"{name}: compilation {figures['compile_seconds']:.1f} s in the warm-up (not timed), "
                  f"{figures['compile_seconds_in_run']:.1f} s inside the timed run")
    for name, agreement in agreements(results).items():
        print(f"{name} vs fp32 engine: identical predictions {agreement['identical']}/{agreement['images']}, "
              f"|radius difference| mean {agreement['mean']:.2e}, max {agreement['max']:.2e} "
              f"(max {agreement['max_both']:.2e} where both certify)")


def agreements(results):
    """Per ``engine-*`` contender: identical predictions and radius differences against ``engine`` (if it ran)."""
    base = results.get("engine")
    out = {}
    if base is None:
        return out
    for name, figures in results.items():
        if name.startswith("engine-"):
            same = figures["predictions"] == base["predictions"]
            both = (figures["predictions"] >= 0) & (base["predictions"] >= 0)
            difference = np.abs(figures["radii"] - base["radii"])
            out[name] = {"identical": int(same.sum()), "images": len(same), "mean": float(difference.mean()),
                         "max": float(difference.max()),
                         "max_both": float(difference[both].max()) if both.any() else 0.0}
    return out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--model", choices=sorted(MODELS), default="cifar_resnet110",
                        help="architecture with seeded random weights (default: cifar_resnet110)")
    parser.add_argument("--checkpoint", default=None, help="certify this checkpoint's model instead of --model")
    parser.add_argument("--dataset", default=None, help="take the inputs from this registered dataset's test "
                                                         "split, or digits32 (default: uniform random inputs)")
    parser.add_argument("--trained", choices=sorted(TRAINED), default=None,
                        help="certify a model trained here (once, into --trained-dir) on its test images: digits "
                             "(digits CNN) or digits32 (CIFAR ResNet-20 on CIFAR-shaped digits)")
    parser.add_argument("--trained-dir", default="benchmark-models", help="where --trained models are kept "
                                                                          "(default: benchmark-models)")
    parser.add_argument("--trained-epochs", type=int, default=None,
                        help="training epochs of the --trained model (default: 30 for digits, 15 for digits32)")
    parser.add_argument("--data-dir", default=None, help="directory of file-based datasets")
    parser.add_argument("--images", type=int, default=2, help="inputs to certify (default: 2)")
    parser.add_argument("--slow-images", type=int, default=None,
                        help="inputs certified by art and loop, the first of --images (default: all of them)")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (default: 100)")
    parser.add_argument("--n", type=int, default=1000, help="estimation samples (default: 1000)")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: 0.25)")
    parser.add_argument("--batch", type=int, default=500, help="noisy samples per forward pass (default: 500)")
    parser.add_argument("--contenders", nargs="*", choices=("engine", "art", "loop", "fast"),
                        default=["engine", "art", "loop", "fast"],
                        help="what to time besides --amp, in this order (default: engine art loop fast)")
    parser.add_argument("--fast-batch", type=batch_size_argument, default=None,
                        help="samples per forward pass of engine-fast: a number or auto (default: --batch)")
    parser.add_argument("--amp", nargs="*", choices=sorted(AMP_DTYPES), default=["bf16"],
                        help="reduced-precision engine runs, timed and compared with fp32 (default: bf16)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last in the reduced-precision runs")
    parser.add_argument("--compile", default=None, help="torch.compile mode in the reduced-precision runs")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s (default: data-sheet table for known GPUs)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all contenders, each run in a fresh process; a contender's fastest "
                             "round counts (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_time_limit_argument(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint and not args.dataset:
        parser.error("--checkpoint needs --dataset (the inputs of the checkpoint's model)")
    results, left_out = run(vars(args))
    report(results, vars(args), left_out)


def run(options):
    """Measure every contender (see the module docstring); ``options`` as parsed by :func:`main`.

    ``options`` may also hold ``expected``, estimated seconds per contender (``gpu_table.py`` passes
    its estimates). Returns the figures per contender and, per contender left out, why (see
    ``_common.run_contenders``).
    """
    config = {**options, "device": str(resolve_device(options["device"]))}
    config["fast_batch"] = config["fast_batch"] or config["batch"]
    names = {"fast": "engine-fast"}
    contenders = list(dict.fromkeys([*(names.get(c, c) for c in config["contenders"]),
                                     *(f"engine-{amp}" for amp in config["amp"])]))
    until = deadline(config["time_limit"])
    if config["trained"]:
        path = trained_path(config["trained"], config["trained_dir"], config["trained_epochs"])
        try:  # trained in a process of its own, which the time limit can stop
            if not path.exists():
                isolated(trained_checkpoint, config["trained"], config["trained_dir"], torch.device(config["device"]),
                         config["trained_epochs"], timeout=time_left(until))
        except OutOfTime as stopped:
            return {}, {contender: f"training the model: {stopped}" for contender in contenders}
        config["checkpoint"], config["dataset"] = str(path), TRAINED[config["trained"]][2]
    # the engine's errors propagate; another contender's memory or runtime error (e.g. ART's host-side noise for
    # ImageNet at large N) or a missing package (ART) leaves it out
    return run_contenders(measure, config, contenders, "seconds_per_image", until, required=("engine",),
                          tolerated=(MemoryError, RuntimeError, ImportError), expected=config.get("expected"))


if __name__ == "__main__":
    main()
