"""Certification: Monte-Carlo counts, CERTIFY and PREDICT, exact bounds, the fast forward pass, file and sharded runs.
Imports only :mod:`catrs_plugin.results` and :mod:`catrs_plugin.utils` of catrs_plugin."""

from catrs_plugin.certify.files import certify_to_file, predict_to_file, select_indices
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound, upper_confidence_bound

__all__ = ["Smooth", "certified_radius", "certify_to_file", "lower_confidence_bound", "predict_to_file",
           "select_indices", "upper_confidence_bound"]
