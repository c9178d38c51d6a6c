"""Turn what a user typed (a zoo name, ``torchvision:NAME``, a student.json) into a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from kdsearch.models.registry import MODELS, TORCHVISION_PREFIX, build_model, model_names


@dataclass
class ResolvedModel:
    model: nn.Module
    num_classes: int
    input_size: tuple[int, int, int]


def natural_shape(name: str) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, input_size) a registered model is designed for."""
    if name.startswith(TORCHVISION_PREFIX):
        return 1000, (3, 224, 224)
    model_names()  # imports the zoo
    meta = MODELS.meta(name)
    default_classes = 10 if meta.get("family") == "digits" else 100
    return meta.get("num_classes", default_classes), tuple(meta.get("input_size", (3, 32, 32)))


def resolve_model(
    text: str,
    num_classes: int | None = None,
    input_size: tuple[int, int, int] | None = None,
    weights: str | None = None,
) -> ResolvedModel:
    """Build the model ``text`` names; a ``.json`` path is a student spec (its own shape)."""
    if text.endswith(".json"):
        from kdsearch.student.spec import load_student

        student = load_student(Path(text), weights=weights)
        return ResolvedModel(student.model, student.num_classes, student.input_size)
    default_classes, default_size = natural_shape(text)
    num_classes = num_classes or default_classes
    input_size = input_size or default_size
    model = build_model(text, num_classes=num_classes, in_channels=input_size[0])
    if weights:
        from kdsearch.models.checkpoint import load_weights

        load_weights(model, weights)
    return ResolvedModel(model, num_classes, input_size)
