"""Entry-point module of the adapters: registers the bundled datasets."""

from __future__ import annotations

from catrs_adapters.datasets import DIGITS
from catrs_plugin.hookspecs import hookimpl
from catrs_plugin.specs import DatasetSpec


@hookimpl
def catrs_register_datasets() -> list[DatasetSpec]:
    return [DIGITS]
