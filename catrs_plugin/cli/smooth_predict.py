"""``catrs smooth-predict``: soft labels for CAT-RS, the smoothed predictions of a checkpoint.

Writes the class frequencies of ``f(x + N(0, sigma^2 I))`` over ``N`` samples for every example
of a split (default: the training set, ``N = 10,000``, ``sigma = 0.25`` as in the paper) as an
``.npy`` of shape ``(examples, classes)``, which ``catrs train --soft-labels FILE`` takes. The
reference code's ``smooth_prediction.py`` plays this role.

Resumable: finished rows are appended to ``OUTFILE.partial`` (raw float32, in example order)
next to ``OUTFILE.partial.json`` (the settings); a rerun with the same settings continues after
the last complete row, and the finished ``.npy`` replaces both at the end. Noise is seeded per
example, so a resumed run writes the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.atomic import save_npy_atomic
from catrs_plugin.checkpoint import load_checkpoint
from catrs_plugin.cli._common import add_data_arguments, add_device_argument, load_split, resolve_device
from catrs_plugin.smoothing import Smooth
from catrs_plugin.training import AMP_DTYPES
from catrs_plugin.validation import check_positive_int, check_sigma


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smooth-predict",
        help="smoothed class frequencies of a checkpoint over a split, as soft labels for CAT-RS (resumable)",
        description="Write the smoothed predictions (class frequencies over N noisy samples) of every example "
                    "of a split to an .npy of shape (examples, classes), for `catrs train --soft-labels`.",
    )
    parser.add_argument("dataset", help="registered dataset name, e.g. digits or cifar10")
    parser.add_argument("base_classifier", help="checkpoint (ours or the reference code's), e.g. Gaussian sigma=0.25")
    parser.add_argument("outfile", help="output .npy; an unfinished run with the same settings is continued")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: 0.25, as in the paper)")
    parser.add_argument("--N", type=int, default=10_000, help="noisy samples per example (default: 10000)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--batch", type=int, default=1000, help="noisy samples per forward batch (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-example noise streams (default: 0)")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                        help="run the classifier under autocast in this precision (default: fp32)")
    parser.add_argument("--restart", action="store_true", help="discard an unfinished run and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sigma = check_sigma(args.sigma)
    device = resolve_device(args.device)
    spec, x, _ = load_split(args.dataset, args.split, args.data_dir)
    outfile = Path(args.outfile)
    if outfile.exists() and not args.restart:
        print(f"{outfile} already exists; pass --restart to compute it again")
        return 0
    model = load_checkpoint(args.base_classifier, map_location=device, dataset=args.dataset)
    settings = {"checkpoint": str(Path(args.base_classifier).resolve()), "dataset": spec.name, "split": args.split,
                "examples": len(x), "classes": spec.num_classes, "sigma": sigma, "N": args.N, "seed": args.seed}
    written = smoothed_predictions_to_file(
        model, x, spec.num_classes, sigma, outfile, n=args.N, batch_size=args.batch, seed=args.seed,
        settings=settings, autocast_dtype=AMP_DTYPES.get(args.amp), resume=not args.restart, progress=not args.quiet,
    )
    print(f"wrote {outfile}: {len(x)} x {spec.num_classes} soft labels ({written} rows computed now)")
    return 0


def smoothed_predictions_to_file(
    model: nn.Module,
    x: np.ndarray,
    num_classes: int,
    sigma: float,
    outfile: str | os.PathLike,
    *,
    n: int = 10_000,
    batch_size: int = 1000,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    autocast_dtype=None,
    resume: bool = True,
    progress: bool = True,
) -> int:
    """Write :meth:`Smooth.class_frequencies` of every row of ``x`` to ``outfile`` (``.npy``), resumably.

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier (inputs in [0, 1]).
    x : numpy.ndarray
        Inputs; row ``i`` uses the noise stream of example ``i``.
    num_classes, sigma, n, batch_size, seed, autocast_dtype
        As in :class:`~catrs_plugin.smoothing.Smooth` and its ``class_frequencies``.
    outfile : str or os.PathLike
        The ``.npy`` written at the end (atomically).
    settings : dict, optional
        Describes the run; an unfinished run is only continued when they match (``n``,
        ``sigma``, ``seed`` and the shape are always part of them).
    resume : bool
        Continue ``OUTFILE.partial`` instead of starting over.

    Returns
    -------
    int
        Rows computed by this call.
    """
    outfile = Path(outfile)
    n = check_positive_int(n, "N")
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, autocast_dtype=autocast_dtype)
    settings = {**(settings or {}), "examples": len(x), "classes": num_classes, "sigma": sigma, "N": n, "seed": seed}
    partial, meta = outfile.with_name(outfile.name + ".partial"), outfile.with_name(outfile.name + ".partial.json")
    done = _resume(partial, meta, settings, num_classes) if resume else 0
    if done == 0:
        outfile.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(settings, indent=1))
        partial.write_bytes(b"")
    group = max(1, smooth.resolve_batch_size(tuple(x.shape[1:])) // n)
    with open(partial, "ab") as handle, tqdm(total=len(x), initial=done, unit="example", disable=not progress) as bar:
        for start in range(done, len(x), group):
            rows = np.arange(start, min(start + group, len(x)))
            handle.write(smooth.class_frequencies(x[rows], n, indices=rows).astype(np.float32).tobytes())
            handle.flush()
            bar.update(len(rows))
    frequencies = np.fromfile(partial, dtype=np.float32).reshape(len(x), num_classes)
    save_npy_atomic(outfile, frequencies)
    partial.unlink()
    meta.unlink()
    return len(x) - done


def _resume(partial: Path, meta: Path, settings: dict[str, Any], num_classes: int) -> int:
    """Complete rows of an unfinished run with the same settings (its partial last row is cut off)."""
    if not partial.exists() or not meta.exists():
        return 0
    previous = json.loads(meta.read_text())
    if previous != json.loads(json.dumps(settings)):
        raise ValueError(
            f"{partial} belongs to a run with other settings ({previous}); pass --restart to discard it "
            "or choose another OUTFILE"
        )
    row_bytes = 4 * num_classes
    done = partial.stat().st_size // row_bytes
    with open(partial, "r+b") as handle:
        handle.truncate(done * row_bytes)
    return done
