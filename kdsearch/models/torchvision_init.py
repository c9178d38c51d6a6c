"""How torchvision's constructors initialise their layers, registered per architecture prefix
(``torchvision:resnet`` covers resnet18 ... resnet152): a student cut from a torchvision
teacher and trained from scratch starts as a torchvision model of its own shapes would.

Read from torchvision's model sources (``models/resnet.py``, ``vgg.py``, ...). Every norm
layer there starts at weight 1, bias 0, which is its own ``reset_parameters``. Architectures
not listed here (shufflenet_v2, alexnet: no initialisation of their own; inception_v3 and the
transformers: per-layer rules a cut does not keep) start from their layers' defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

from kdsearch.models.registry import TORCHVISION_PREFIX, register_family_init

Init = Callable[[nn.Module], None]


def _he_fan_out(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _he_fan_in(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight)


def _normal(std: float) -> Init:
    return lambda m: nn.init.normal_(m.weight, 0.0, std)


def _truncated(std: float) -> Init:
    return lambda m: nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)


def _mnasnet_linear(m: nn.Module) -> None:
    nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")


def _efficientnet_linear(m: nn.Module) -> None:
    bound = 1.0 / math.sqrt(m.out_features)
    nn.init.uniform_(m.weight, -bound, bound)


def _layers(conv: Init, linear: Init | None) -> Init:
    """Each Conv2d by ``conv``, each Linear by ``linear`` (None: its default), biases zero."""
    def initialise(model: nn.Module) -> None:
        for m in model.modules():
            rule = conv if isinstance(m, nn.Conv2d) else (
                linear if isinstance(m, nn.Linear) else None)
            if rule is None:
                continue
            rule(m)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return initialise


def _squeezenet(model: nn.Module) -> None:
    """Kaiming-uniform convs, the last (the classifier) N(0, 0.01), biases zero."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for m in convs:
        if m is convs[-1]:
            nn.init.normal_(m.weight, 0.0, 0.01)
        else:
            nn.init.kaiming_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


BY_PREFIX: dict[str, Init] = {
    # He-normal (fan-out) convs; the Linear keeps its default, bias included
    "resnet": _layers(_he_fan_out, None), "resnext": _layers(_he_fan_out, None),
    "wide_resnet": _layers(_he_fan_out, None),
    "vgg": _layers(_he_fan_out, _normal(0.01)),
    "mobilenet_v2": _layers(_he_fan_out, _normal(0.01)),
    "mobilenet_v3": _layers(_he_fan_out, _normal(0.01)),
    "regnet": _layers(_he_fan_out, _normal(0.01)),  # N(0, 2/(k*k*out)): He fan-out
    "mnasnet": _layers(_he_fan_out, _mnasnet_linear),
    "efficientnet": _layers(_he_fan_out, _efficientnet_linear),
    "densenet": _layers(_he_fan_in, lambda m: None),  # the Linear keeps its default weight
    "squeezenet": _squeezenet,
    "googlenet": _layers(_truncated(0.01), _truncated(0.01)),
    "convnext": _layers(_truncated(0.02), _truncated(0.02)),
}
for _prefix, _init in BY_PREFIX.items():
    register_family_init(TORCHVISION_PREFIX + _prefix)(_init)
