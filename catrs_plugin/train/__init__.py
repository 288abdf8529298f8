"""Training: the shared loop, training data and augmentation, schedules, soft labels, the fast step, checkpoints.
Imports :mod:`catrs_plugin.plugins` and the layers below it, never compare or cli."""

from catrs_plugin.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from catrs_plugin.train.loop import LoaderData, TensorData, TrainConfig, TrainingDiverged, fast_config, train
from catrs_plugin.train.soft_labels import smoothed_soft_labels

__all__ = ["LoaderData", "TensorData", "TrainConfig", "TrainingDiverged", "fast_config", "load_checkpoint",
           "read_checkpoint", "save_checkpoint", "smoothed_soft_labels", "train"]
