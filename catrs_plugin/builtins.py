"""The core's built-in registrations: the CAT-RS and Gaussian methods and the digits CNN."""

from __future__ import annotations

from catrs_plugin.hookspecs import hookimpl
from catrs_plugin.methods import CATRS, GAUSSIAN, Method
from catrs_plugin.models import digits_cnn
from catrs_plugin.specs import ModelSpec


@hookimpl
def catrs_register_methods() -> list[Method]:
    return [GAUSSIAN, CATRS]


@hookimpl
def catrs_register_models() -> list[ModelSpec]:
    return [ModelSpec("digits_cnn", digits_cnn, "two-layer CNN for 8x8 grey images (scikit-learn digits)")]
