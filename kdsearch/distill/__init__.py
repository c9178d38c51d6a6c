"""Distillation: methods (``ce``, ``kd``, ...), one trainer for all of them, stages files.

>>> from kdsearch.distill import TrainConfig, train_student
>>> summary = train_student("digits_resnet8", "digits_resnet14", method="kd",  # doctest: +SKIP
...                         dataset="digits", config=TrainConfig(epochs=2), out_dir="runs/kd")
"""

from kdsearch.distill.config import TrainConfig
from kdsearch.distill.losses import cross_entropy, kd_loss
from kdsearch.distill.method import (
    METHODS,
    DistillMethod,
    build_method,
    get_method,
    method_names,
    register_method,
)
from kdsearch.distill.stages import Stage, load_stages, run_stages, train_student
from kdsearch.distill.trainer import TrainingDiverged, TrainingInterrupted, train

__all__ = [
    "METHODS",
    "DistillMethod",
    "Stage",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_method",
    "cross_entropy",
    "get_method",
    "kd_loss",
    "load_stages",
    "method_names",
    "register_method",
    "run_stages",
    "train",
    "train_student",
]
