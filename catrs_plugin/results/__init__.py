"""Result files and what is computed from them: Cohen-format TSVs, metrics, tables, plots, corruption summaries.
Imports only :mod:`catrs_plugin.utils` of catrs_plugin."""

from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy, summarize
from catrs_plugin.results.tsv import CertifyResults, ResultWriter, read_certify_results

__all__ = ["CertifyResults", "ResultWriter", "average_certified_radius", "certified_accuracy", "read_certify_results",
           "summarize"]
