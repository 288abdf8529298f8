"""CAT-RS training throughput: our training loop against a loop in the style of the reference code.

Both train the same model (seeded random weights) on the same CIFAR-10-shaped random data with
the same loader batch, M (``num_noise_vec``), T (``num_steps``), epsilon and lambda:

* ``reference``: a loop organised the way ``train_catrs.py`` of ``alinlab/smoothing-catrs``
  is: a ``DataLoader`` on host memory, each of the M chunks of a loader batch moved to the
  device, a list of M noise tensors, the model switched to eval mode and its parameters
  frozen and unfrozen around the worst-case search at every step, four ``.item()`` host
  synchronisations per step for the running averages, plain (unfused) SGD, fp32;
* ``ours``: :func:`catrs_plugin.train.loop.train` with the registered ``catrs`` method, fp32;
* ``ours-amp``: the same with ``--amp`` (bf16 by default), ``channels_last`` and, on CUDA,
  the fused SGD kernel;
* ``ours-fast``: the fast path, :func:`catrs_plugin.train.loop.fast_config`: as
  ``ours-amp`` plus ``torch.compile`` of the model (``"reduce-overhead"``, i.e. CUDA graphs,
  on CUDA; ``"default"`` on the CPU). Compilation happens in the warm-up batch (its time is
  reported, not counted); the last, smaller batch of a real epoch would compile once more.

The mean loss of the timed batches is reported for every contender: all train the same model
from the same weights on the same data, so the fast paths must stay close to ``ours``
(``reference`` draws its noise differently and shuffles with its own loader, so its loss only
matches in distribution).

Each contender runs in a fresh process (all of them in turn ``--repeats`` times, the fastest
round counting), in the order of ``--contenders``; ``--time-limit`` stops the whole run after
that many seconds (see ``_common.run_contenders``). Only ``--batches`` loader batches are timed
(after one warm-up batch), and the time of a full epoch of ``--epoch-examples`` examples
(50,000 for CIFAR-10) is extrapolated from them: the figures are labelled as such.

Example (CPU, a few minutes on 2 cores)::

    python benchmarks/train.py --device cpu --model cifar_resnet20 --batch 64 --batches 2

The paper's setting on one GPU (``benchmarks/gpu_table.py`` runs it with everything else)::

    python benchmarks/train.py --device cuda --model cifar_resnet110 --batch 256 --batches 20 --workers 4
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CIFAR, add_time_limit_argument, deadline, describe_device, run_contenders, timed  # noqa: E402

from catrs_plugin.backbones.normalize import NormalizeLayer  # noqa: E402
from catrs_plugin.cli._common import resolve_device  # noqa: E402

SHAPE, CLASSES = (3, 32, 32), 10
CONTENDERS = ("reference", "ours", "ours-amp", "ours-fast")


def make_model(name: str, device: torch.device) -> nn.Module:
    from catrs_plugin.plugins.registry import get_registry

    torch.manual_seed(0)
    net = get_registry().model(name).factory(CLASSES, SHAPE[0])
    return nn.Sequential(NormalizeLayer(*CIFAR), net).to(device)


def make_data(examples: int):
    rng = np.random.default_rng(0)
    x = rng.random((examples, *SHAPE), dtype=np.float32)
    y = rng.integers(0, CLASSES, examples)
    soft = rng.dirichlet(np.ones(CLASSES), size=examples).astype(np.float32)
    return x, y, soft


def reference_style(model, data, config, device):
    """One pass over ``data``, organised like the reference training script (see the module docstring)."""
    m, steps, epsilon, lbd, sigma = config["m"], config["t"], config["epsilon"], config["lbd"], config["sigma"]
    dataset = torch.utils.data.TensorDataset(*(torch.as_tensor(a) for a in data))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config["batch"], shuffle=True,
                                         num_workers=config["workers"], pin_memory=device.type == "cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    lower = torch.ones(m + 1, m).tril(-1).to(device)  # row k keeps the k smallest losses
    sums, count = [0.0, 0.0, 0.0, 0.0], 0
    model.train()
    for x, y, p in loader:
        size = len(x) // m
        for k in range(m):
            inputs, targets, soft = (t[k * size : (k + 1) * size].to(device) for t in (x, y, p))
            noises = [torch.randn_like(inputs) * sigma for _ in range(m)]
            logits0 = model(torch.cat([inputs + d for d in noises]))
            chunks0 = torch.chunk(logits0, m)
            votes = sum(F.one_hot(c.argmax(1), CLASSES) for c in chunks0) / m
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            model.eval()
            worst = _search(model, inputs, soft, noises, epsilon, steps)
            model.train()
            for parameter in model.parameters():
                parameter.requires_grad_(True)
            logits = model(torch.cat([inputs + d for d in worst]))
            xent = torch.cat([F.cross_entropy(c, targets, reduction="none")[:, None] for c in chunks0], 1).sort(1)[0]
            confidence = votes.gather(1, targets[:, None]).squeeze(1)
            accept = torch.distributions.Binomial(m, confidence).sample().long().clamp(min=1)
            loss_low = (xent * lower[accept]).mean(1)
            kl = torch.cat([F.kl_div(F.log_softmax(c, 1), soft, reduction="none").sum(1, keepdim=True)
                            for c in torch.chunk(logits, m)], 1).max(1)[0]
            loss = (loss_low + lbd * kl * (accept == m)).mean()
            correct = (logits.argmax(1) == targets.repeat(m)).float().mean()
            top5 = (logits.topk(5, 1)[1] == targets.repeat(m)[:, None]).any(1).float().mean()
            for slot, value in enumerate((loss_low.mean(), loss, correct, top5)):
                sums[slot] += value.item() * size
            count += size
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return sums[1] / max(count, 1)


def _search(model, inputs, soft, noises, epsilon, steps):
    m = len(noises)
    repeated = inputs.repeat(m, 1, 1, 1)
    start = torch.cat(noises)
    flat = start.view(len(start), -1)
    mean0, rms0 = flat.mean(1).view(-1, 1, 1, 1), flat.pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    noise = start.detach()
    for _ in range(steps):
        noise.requires_grad_()
        chunks = torch.chunk(model(repeated + noise), m)
        loss = sum(F.kl_div(F.log_softmax(c, 1), soft, reduction="none").sum(1) for c in chunks).sum() / m
        grad = torch.autograd.grad(loss, [noise])[0]
        grad = grad / (grad.view(len(grad), -1).norm(dim=1).view(-1, 1, 1, 1) + 1e-8)
        noise = start + (noise + 2 * epsilon / steps * grad - start).renorm(2, 0, epsilon)
        flat = noise.view(len(noise), -1)
        mean, rms = flat.mean(1).view(-1, 1, 1, 1), flat.pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
        noise = ((noise - mean) / rms * rms0 + mean0).detach()
    return torch.chunk(noise, m)


def ours(model, data, config, device, options=None):
    """One epoch over ``data`` with :func:`catrs_plugin.train.loop.train`; the mean loss."""
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.loop import TensorData, TrainConfig, train

    method = get_registry().method("catrs")
    hyperparameters = method.hyperparameters(num_noise_vec=config["m"], num_steps=config["t"],
                                             epsilon=config["epsilon"], lbd=config["lbd"])
    settings = replace(TrainConfig(epochs=1, batch_size=config["batch"], progress=False), **(options or {}))
    return train(model, method, hyperparameters, config["sigma"], TensorData(*data), settings)[-1]["loss"]


def contender_options(contender, config, device):
    """The ``TrainConfig`` settings of one of our contenders."""
    from catrs_plugin.train.loop import TrainConfig, fast_config

    if contender == "ours-fast":
        fast = fast_config(TrainConfig(), device)
        return {"amp": config["amp"], "channels_last": True, "fused": fast.fused, "compile": fast.compile}
    if contender == "ours-amp":
        return {"amp": config["amp"], "channels_last": True}
    return {}


def measure(config, contender):
    torch.set_num_threads(config["threads"] or torch.get_num_threads())
    device = torch.device(config["device"])
    model = make_model(config["model"], device)
    options = contender_options(contender, config, device)
    run = reference_style if contender == "reference" else lambda *a: ours(*a, options=options)
    warm = make_data(config["batch"])
    _, warm_seconds, _ = timed(device, lambda: run(model, warm, config, device))
    data = make_data(config["batch"] * config["batches"])
    loss, seconds, memory = timed(device, lambda: run(model, data, config, device))
    return {"seconds_per_batch": seconds / config["batches"], "memory_mib": memory, "device": describe_device(device),
            "warm_up_seconds": warm_seconds, "loss": loss}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--model", default="cifar_resnet20",
                        help="registered CIFAR architecture (default: cifar_resnet20; the paper: cifar_resnet110)")
    parser.add_argument("--batch", type=int, default=64, help="loader batch, split into M steps (default: 64)")
    parser.add_argument("--batches", type=int, default=2, help="loader batches timed (default: 2)")
    parser.add_argument("--epoch-examples", type=int, default=50_000, help="examples per epoch (default: 50000)")
    parser.add_argument("--m", type=int, default=4, help="noises per example, num_noise_vec (default: 4)")
    parser.add_argument("--t", type=int, default=4, help="worst-case search steps, num_steps (default: 4)")
    parser.add_argument("--epsilon", type=float, default=1.0, help="search radius (default: 1.0)")
    parser.add_argument("--lbd", type=float, default=0.5, help="lambda (default: 0.5)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: 0.25)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default="bf16",
                        help="precision of ours-amp and ours-fast (default: bf16)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop (default: 0)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="what to time, in this order (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all contenders, each run in a fresh process; a contender's fastest "
                             "round counts (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_time_limit_argument(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch % args.m:
        parser.error("--batch must be a multiple of --m (each loader batch is split into M steps)")
    results, left_out = run(vars(args))
    report(results, vars(args), left_out)


def run(options):
    """Measure every contender (see the module docstring); ``options`` as parsed by :func:`main`.

    ``options`` may also hold ``expected``, estimated seconds per contender (``gpu_table.py`` passes
    its estimates). Returns the figures per contender and, per contender left out, why (see
    ``_common.run_contenders``).
    """
    config = {**options, "device": str(resolve_device(options["device"]))}
    return run_contenders(measure, config, config["contenders"], "seconds_per_batch", deadline(config["time_limit"]),
                          expected=config.get("expected"))


def seconds_per_epoch(figures, config):
    """Extrapolated seconds of an epoch of ``epoch_examples`` examples."""
    return figures["seconds_per_batch"] * -(-config["epoch_examples"] // config["batch"])


def report(results, config, left_out=None):
    for name, why in (left_out or {}).items():
        print(f"{name}: no figures ({why})")
    if not results:
        return
    first = next(iter(results.values()))
    print(f"device: {first['device']}")
    print(f"model: {config['model']}; batch {config['batch']} (M={config['m']} steps of "
          f"{config['batch'] // config['m']}), T={config['t']}; {config['batches']} loader batches timed, "
          f"epoch of {config['epoch_examples']} examples extrapolated")
    reference = results.get("reference")
    print(f"{'contender':<11}{'s/batch':>10}{'examples/s':>12}{'s/epoch (extrapolated)':>24}{'peak MiB':>10}"
          f"{'speed-up vs reference':>23}{'mean loss':>11}{'warm-up s':>11}")
    for name, figures in results.items():
        speedup = f"{reference['seconds_per_batch'] / figures['seconds_per_batch']:.2f}x" if reference else "n/a"
        print(f"{name:<11}{figures['seconds_per_batch']:>10.3f}{config['batch'] / figures['seconds_per_batch']:>12.1f}"
              f"{seconds_per_epoch(figures, config):>24.0f}{figures['memory_mib']:>10.0f}{speedup:>23}"
              f"{figures['loss']:>11.4f}{figures['warm_up_seconds']:>11.1f}")


if __name__ == "__main__":
    main()
