"""Published per-example certification results, to put next to measured ones.

The CAT-RS release (Jeong, Kim, Shin, AAAI 2023; ``alinlab/smoothing-catrs``, folder ``data/``,
MIT licence; a copy ships with the tests in ``tests/data/catrs-official-certify``) holds Cohen-format
TSVs of every method of the paper's table, certified with ``N0 = 100``, ``N = 100,000`` and
``alpha = 0.001`` (:data:`CATRS_RELEASE`), laid out as ``<dataset>/<folder>/noise_<sigma>.tsv``
(CIFAR-10) or ``<dataset>/<folder>_noise_<sigma>.tsv`` (ImageNet), where ``<folder>`` is the
release's name for a method (``cohen`` for Gaussian, ``cat-rs`` for CAT-RS, ...).
:func:`published_results` finds the files of one dataset and noise level under such a folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

#: What a table calls a published row (the ``source`` of its summary).
PUBLISHED = "published"


@dataclass(frozen=True)
class Release:
    """A set of published result files: what certified them and the release's names for the methods.

    Attributes
    ----------
    name : str
        Who published them, for tables.
    n0, n, alpha
        CERTIFY's selection samples, estimation samples and failure probability.
    folders : mapping
        The release's name of each method to its registered name.
    """

    name: str
    n0: int
    n: int
    alpha: float
    folders: Mapping[str, str] = field(default_factory=dict)


CATRS_RELEASE = Release(
    name="CAT-RS release (Jeong et al. 2023)", n0=100, n=100_000, alpha=0.001,
    folders={"cohen": "gaussian", "stab": "stability", "salman": "smoothadv", "macer": "macer",
             "consistency": "consistency", "smoothmix": "smoothmix", "cat-rs": "catrs", "cat_rs": "catrs"},
)


def published_results(directory: str | os.PathLike, dataset: str, sigma: float,
                      release: Release = CATRS_RELEASE) -> dict[str, Path]:
    """The published file of each method for ``dataset`` at ``sigma`` under ``directory``, by registered name.

    Raises
    ------
    ValueError
        When ``directory`` has no folder for ``dataset`` (the message lists the ones it has) or no file
        for ``sigma`` in it.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder of published results (e.g. the CAT-RS release's data/ "
                         "folder, a copy of which is tests/data/catrs-official-certify)")
    folder = root / dataset
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ValueError(f"published results {str(root)!r} have none for dataset {dataset!r}; they have: "
                         f"{', '.join(have) or '(none)'}")
    found = {}
    for name, method in release.folders.items():
        for path in (folder / name / f"noise_{sigma}.tsv", folder / f"{name}_noise_{sigma}.tsv"):
            if path.is_file() and method not in found:
                found[method] = path
    if not found:
        raise ValueError(f"published results {str(root)!r} have none for {dataset} at sigma {sigma} "
                         f"(looked for <method>/noise_{sigma}.tsv and <method>_noise_{sigma}.tsv)")
    return found


__all__ = ["CATRS_RELEASE", "PUBLISHED", "Release", "published_results"]
