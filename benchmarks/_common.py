"""Helpers shared by the benchmark scripts: models, trained checkpoints, devices, FLOPs, peak
figures, memory, isolation.

Every measurement runs in a fresh process (``spawn``), so that one contender's warm caches,
allocator state or peak memory never count for another.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import re
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
    path = Path(folder) / f"{name}_{arch}_gaussian_{TRAINED_SIGMA}_{epochs}epochs.pt"
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


def isolated(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"
