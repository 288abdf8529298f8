"""Side-by-side comparison of methods (``catrs compare``): the plan, the runs and where they execute, the summaries.
Imports :mod:`catrs_plugin.train` and the layers below it, never cli."""

from catrs_plugin.compare.plan import (
           BUDGETS,
           Budget,
           Comparison,
           MethodOutcome,
           parse_floats,
           parse_method_presets,
           parse_methods,
)
from catrs_plugin.compare.run import run_comparison

__all__ = ["BUDGETS", "Budget", "Comparison", "MethodOutcome", "parse_floats", "parse_method_presets",
           "parse_methods", "run_comparison"]
