"""Training objectives, each a small function of (model, batch, hyper-parameters) -> loss.
Imports :mod:`catrs_plugin.certify` and the layers below it, never the training loop, plugins or compare."""

from catrs_plugin.methods.base import DataSchedule, EpochView, HyperParameter, Method, ScheduleHook, TrainBatch
from catrs_plugin.methods.catrs import CATRS, catrs_loss, worst_case_noise
from catrs_plugin.methods.gaussian import GAUSSIAN, gaussian_loss

__all__ = [
    "CATRS", "GAUSSIAN", "DataSchedule", "EpochView", "HyperParameter", "Method", "ScheduleHook", "TrainBatch",
    "catrs_loss", "gaussian_loss", "worst_case_noise",
]
