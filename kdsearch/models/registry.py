"""The model registry and the factory that resolves names.

Zoo models register where they are defined::

    @register_model("resnet20", family="resnet_cifar")
    def resnet20(num_classes: int = 100, in_channels: int = 3) -> nn.Module: ...

``torchvision:NAME`` resolves any torchvision classification model; ``FILE.py:NAME`` and
``package.module:NAME`` build the user's own model (:mod:`kdsearch.models.user`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.models.user import build_user_model, is_user_model
from kdsearch.registry import Registry, unknown_name_message

MODELS: Registry = Registry(
    "model", builtins="kdsearch.models.zoo",
    hint="or torchvision:NAME, your own FILE.py:NAME or package.module:NAME, or a student.json")
register_model = MODELS.register
# family -> fn(model): initialise a model of the family as the zoo does (a student cut from
# it, at the student's own shapes, gets what a zoo model of those shapes would get)
FAMILY_INITS: Registry[Callable[[nn.Module], None]] = Registry(
    "family initialisation", builtins="kdsearch.models.zoo")
register_family_init = FAMILY_INITS.register

TORCHVISION_PREFIX = "torchvision:"


def build_model(name: str, num_classes: int = 100, in_channels: int = 3) -> nn.Module:
    """Build a fresh (randomly initialised) model by name."""
    if is_user_model(name):
        return build_user_model(name, num_classes, in_channels)
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name[len(TORCHVISION_PREFIX):], num_classes, in_channels)
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)


def model_family(name: str) -> str:
    """The family a model belongs to (chooses the search preset), e.g. ``resnet_cifar``."""
    if name.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if is_user_model(name):
        return "generic"
    return MODELS.meta(name).get("family", "generic")


def initialisation_of(name: str) -> str:
    """What initialises a fresh model named ``name`` (:func:`initialise_like`'s argument): its
    zoo family, or the name itself for a torchvision model (its architecture decides)."""
    return name if name.startswith(TORCHVISION_PREFIX) else model_family(name)


def initialise_like(model: nn.Module, family: str) -> None:
    """Re-initialise every layer of ``model`` in place as a fresh model of ``family`` (a zoo
    family, or ``torchvision:ARCH``) is: each layer's own ``reset_parameters``, then the
    family's initialisation where one is registered (He-normal convs for the CIFAR ResNets,
    WRNs, VGGs and MobileNetV2; torchvision's per architecture, by the longest registered
    prefix: ``torchvision:resnet`` for ``torchvision:resnet50``)."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    matches = [key for key in FAMILY_INITS.names() if family == key or (
        key.startswith(TORCHVISION_PREFIX) and family.startswith(key))]
    if matches:
        FAMILY_INITS.get(max(matches, key=len))(model)


def model_names() -> list[str]:
    return MODELS.names()


def _build_torchvision(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if arch not in known:
        raise KdsearchError(unknown_name_message("torchvision model", arch, known))
    if in_channels != 3:
        raise KdsearchError(f"torchvision:{arch} takes 3 input channels, not {in_channels}")
    return tvm.get_model(arch, weights=None, num_classes=num_classes)
