"""Helpers shared by the benchmark scripts: models, trained checkpoints, devices, FLOPs, peak
figures, memory, isolation and time limits.

Every measurement runs in a fresh process (``spawn``), so that one contender's warm caches,
allocator state or peak memory never count for another. A measurement may be given a time
limit: when it passes, its process and every process it started are killed
(:func:`isolated`), and the contenders still to come are reported as not reached
(:func:`run_contenders`).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from catrs_plugin.backbones.normalize import NormalizeLayer

CIFAR = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MNIST = ((0.1307,), (0.3081,))

#: Benchmark models: name -> (input shape, classes, (mean, std)).
MODELS = {
    "cifar_resnet110": ((3, 32, 32), 10, CIFAR),
    "resnet50": ((3, 224, 224), 1000, IMAGENET),
    "lenet": ((1, 28, 28), 10, MNIST),
}

#: Dense peak TFLOP/s of known GPUs (vendor data sheets, SXM boards; no sparsity), by precision.
#: "fp32" is the plain FP32 pipeline; "tf32" applies to fp32 convolutions when cuDNN may use
#: TF32 (PyTorch's default for convolutions).
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
}


def build_model(name: str, device: torch.device, seed: int = 0) -> tuple[nn.Module, tuple[int, ...], int]:
    """``Sequential(NormalizeLayer, backbone)`` in eval mode with seeded random weights.

    The backbone comes from the catrs model registry (``cifar_resnet110``, ``lenet``) or, for
    ``resnet50``, from timm. Returns the model, the input shape and the number of classes.
    """
    from catrs_plugin.plugins.registry import get_registry

    shape, classes, (mean, std) = MODELS[name]
    torch.manual_seed(seed)
    models = get_registry().models
    if name in models:
        net = models[name].factory(classes, shape[0])
    else:
        import timm

        net = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=shape[0])
    return nn.Sequential(NormalizeLayer(mean, std), net).to(device).eval(), shape, classes


#: Trained models for agreement measurements: name -> (architecture, dataset of the checkpoint,
#: inputs, epochs, batch). ``digits32`` is the digits data as CIFAR-shaped images (see
#: :func:`digits32`), certified by a CIFAR ResNet-20 with CIFAR-10's normalisation.
TRAINED = {
    "digits": ("digits_cnn", "digits", "digits", 30, 64),
    "digits32": ("cifar_resnet20", "cifar10", "digits32", 15, 64),
}

#: Noise level of the trained models (Gaussian augmentation, Cohen et al.).
TRAINED_SIGMA = 0.25


def digits32(split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped images from the embedded digits: each 8x8 image upsampled (bilinear) to
    32x32 and repeated over 3 channels; ``(n, 3, 32, 32)`` float32 in [0, 1] and labels."""
    from catrs_adapters.datasets import load_digits

    x, y = load_digits(split)
    large = F.interpolate(torch.from_numpy(x), size=(32, 32), mode="bilinear", align_corners=False)
    return large.repeat(1, 3, 1, 1).clamp(0, 1).numpy(), y


def load_inputs(name: str, split: str = "test", data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split of ``digits32`` or of a registered dataset, as numpy arrays."""
    if name == "digits32":
        return digits32(split)
    from catrs_plugin.plugins.registry import get_registry

    return get_registry().dataset(name).load(split, data_dir=data_dir)


def trained_path(name: str, folder: str | Path, epochs: int | None = None) -> Path:
    """Where :func:`trained_checkpoint` keeps the :data:`TRAINED` model ``name`` (``epochs``: the table's)."""
    arch, _, _, default_epochs, _ = TRAINED[name]
    return Path(folder) / f"{name}_{arch}_gaussian_{TRAINED_SIGMA}_{epochs or default_epochs}epochs.pt"


def trained_checkpoint(
    name: str, folder: str | Path, device: torch.device, epochs: int | None = None
) -> tuple[Path, str]:
    """Path of the :data:`TRAINED` model ``name`` in ``folder``, trained there first if missing
    (Gaussian augmentation at :data:`TRAINED_SIGMA`, seed 0, ``epochs`` or the table's), and the
    name of its inputs."""
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.checkpoint import save_checkpoint
    from catrs_plugin.train.loop import TensorData, TrainConfig, train

    arch, dataset, inputs, default_epochs, batch = TRAINED[name]
    epochs = epochs or default_epochs
    path = trained_path(name, folder, epochs)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = get_registry().create_model(arch, dataset).to(device)
        x, y = load_inputs(inputs, "train")
        config = TrainConfig(epochs=epochs, batch_size=batch, lr=0.1, lr_step_size=max(1, epochs // 3 * 2),
                             progress=False)
        history = train(model, get_registry().method("gaussian"), {}, TRAINED_SIGMA, TensorData(x, y), config)
        save_checkpoint(path, {"arch": arch, "dataset": dataset, "state_dict": model.state_dict(),
                               "epoch": epochs, "history": history})
    return path, inputs


def flops_per_sample(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """Floating-point operations of one forward pass of one sample (FlopCounterMode: 2 per MAC)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros((2, *shape), device=device))
    return counter.get_total_flops() / 2


def peak_tflops(device: torch.device, precision: str, override: float | None) -> tuple[float | None, str]:
    """The device's peak TFLOP/s for ``precision`` ("fp32", "bf16", "fp16") and where it came from."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for this device (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        precision = "tf32"
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table[precision], f"{key} {precision} data sheet"
    return None, f"{name} not in the table (pass --peak-tflops)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA allocator statistics, or the process's peak resident set (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """Peak since :func:`reset_peak_memory`: CUDA memory allocated, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as handle:
            return int(re.search(r"VmHWM:\s+(\d+)", handle.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return float("nan")


def timed(device: torch.device, function: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, seconds, peak memory MiB)`` of one call, the device synchronised around it."""
    synchronize(device)
    reset_peak_memory(device)
    began = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - began, peak_memory_mib(device)


class OutOfTime(Exception):
    """A measurement was stopped at its time limit (its processes killed), or not started for lack of time."""


def _call(connection: Any, function: Callable[..., Any], args: tuple) -> None:
    """Body of an :func:`isolated` process: its own process group, then ``function(*args)`` sent back."""
    os.setpgid(0, 0)
    try:
        outcome = (True, function(*args))
    except BaseException as error:  # sent to the parent, which raises it
        outcome = (False, error)
    try:
        connection.send(outcome)
    except Exception as error:  # an exception (or result) that does not pickle
        connection.send((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({error})")))
    connection.close()


def isolated(function: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Run ``function(*args)`` in a fresh spawned process and return its result (or raise its exception).

    The process leads its own process group. With ``timeout`` (seconds), the group (the process,
    its data-loader workers and compile workers) is killed when the time passes, and
    :class:`OutOfTime` is raised; a ``timeout`` of zero or less raises it without starting.
    A process that dies without answering (killed for memory, a crash) raises ``RuntimeError``.
    """
    if timeout is not None and timeout <= 0:
        raise OutOfTime("not started: no time left")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_call, args=(sender, function, args))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise OutOfTime(f"stopped by the time limit after {timeout:.0f} s")
        succeeded, value = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the measurement process ended without a result (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # not yet its own group leader
                process.kill()
        process.join()
        receiver.close()
    if not succeeded:
        raise value
    return value


def deadline(time_limit: float | None) -> float | None:
    """The ``time.monotonic()`` at which a run given ``time_limit`` seconds from now must stop (None: never)."""
    return None if time_limit is None else time.monotonic() + time_limit


def time_left(until: float | None) -> float | None:
    """Seconds until ``until`` (a :func:`deadline`), or None."""
    return None if until is None else until - time.monotonic()


def run_contenders(
    measure: Callable[[dict, str], dict],
    config: dict,
    contenders: list[str],
    fastest: str,
    until: float | None = None,
    tolerated: tuple[type[BaseException], ...] = (),
    required: tuple[str, ...] = (),
    expected: dict[str, float] | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Measure every contender with ``measure(config, contender)`` in a fresh process, all of them
    in turn ``config["repeats"]`` times; a contender's round with the smallest ``fastest`` figure counts.

    Each result gets ``wall_seconds``: its whole process, start-up, warm-up and compilation
    included. At ``until`` (a :func:`deadline`) the running contender is stopped; it and those
    not started yet are left out. With ``expected`` (estimated seconds per contender), a
    contender whose estimate exceeds the time left is not started. A contender whose
    ``measure`` raises one of ``tolerated`` is left out too (its error printed), unless it is
    ``required``; other errors propagate.

    Returns
    -------
    results : dict
        Contender to figures.
    left_out : dict
        Contender to why it has no figures (time limit, error).
    """
    results: dict[str, dict] = {}
    left_out: dict[str, str] = {}
    for round_ in range(config["repeats"]):
        for contender in contenders:
            if contender in left_out:
                continue
            guess, left = (expected or {}).get(contender), time_left(until)
            if left is not None and contender not in results:
                if left <= 0:
                    left_out[contender] = "not started: no time left"
                    continue
                if guess is not None and guess > left:
                    left_out[contender] = f"not started: needs about {guess:.0f} s, {left:.0f} s left"
                    continue
            print(f"round {round_ + 1}: running {contender} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                figures = isolated(measure, config, contender, timeout=time_left(until))
            except OutOfTime as stopped:
                if contender not in results:
                    left_out[contender] = str(stopped)
                continue
            except tolerated as error:
                if contender in required:
                    raise
                left_out[contender] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                print(f"{contender} {left_out[contender]}")
                continue
            figures["wall_seconds"] = time.monotonic() - began
            if contender not in results or figures[fastest] < results[contender][fastest]:
                results[contender] = figures
    return results, left_out


def add_time_limit_argument(parser: Any) -> None:
    """``--time-limit SECONDS`` of the benchmark scripts."""
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop after this many seconds: the running contender is killed and it and the "
                             "contenders still to come are reported as not reached (default: no limit)")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"
