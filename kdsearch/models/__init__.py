"""Models: the CIFAR zoo, small digits models, and any torchvision classifier."""

from kdsearch.models.registry import (
    MODELS,
    TORCHVISION_PREFIX,
    build_model,
    model_family,
    model_names,
    register_model,
)

__all__ = [
    "MODELS",
    "TORCHVISION_PREFIX",
    "build_model",
    "model_family",
    "model_names",
    "register_model",
]
