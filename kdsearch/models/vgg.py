"""VGG with batch norm for CIFAR, as defined in the CIFAR distillation model zoo.

Matches RepDistiller / mdistiller ``vgg.py`` with ``batch_norm=True`` (their ``vgg8_bn`` ...
``vgg19_bn``, which the zoo calls ``vgg8`` ... ``vgg19``): five conv blocks ``block0`` ..
``block4`` of conv(3x3, with bias)-BN-ReLU units, 2x2 max-pooling after block0, block1 and
block2 (the reference also pools after block3, but only for 64x64 inputs), global average
pooling and a single ``classifier`` linear layer. Parameter names (``block0.0.weight``,
``block0.1.running_mean``, ``classifier.weight``) are the reference ones.

As in the reference each block ends at its last BN; the ReLU after it is applied in
``forward``. ``forward`` returns logits only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from kdsearch.models.registry import register_family_init, register_model
from kdsearch.models.resnet_cifar import CIFAR_INPUT, init_weights

# conv widths of block0 .. block4
CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def conv_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv-BN-ReLU per width, without the final ReLU (indices 0, 1, 2, 3, 4, ...)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """A CIFAR VGG: 32x32 -> 16 -> 8 -> 4 (block3 and block4 both run at 4x4) -> pool."""

    def __init__(
        self, config: Sequence[Sequence[int]], num_classes: int = 100, in_channels: int = 3
    ):
        super().__init__()
        self.block0 = conv_block(in_channels, config[0])
        self.block1 = conv_block(config[0][-1], config[1])
        self.block2 = conv_block(config[1][-1], config[2])
        self.block3 = conv_block(config[2][-1], config[3])
        self.block4 = conv_block(config[3][-1], config[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(config[4][-1], num_classes)
        init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.relu(self.block0(x)))
        x = self.pool1(self.relu(self.block1(x)))
        x = self.pool2(self.relu(self.block2(x)))
        x = self.relu(self.block3(x))
        x = self.relu(self.block4(x))
        x = torch.flatten(self.pool4(x), 1)
        return self.classifier(x)


@register_family_init("vgg")
def init_vgg(model: nn.Module) -> None:
    """The zoo's initialisation, with the classifier's weights drawn from N(0, 0.01)."""
    init_weights(model)
    nn.init.normal_(model.get_submodule("classifier").weight, 0, 0.01)


def _vgg(name: str, num_classes: int, in_channels: int) -> VGG:
    return VGG(CONFIGS[name], num_classes, in_channels)


@register_model("vgg8", family="vgg", input_size=CIFAR_INPUT)
def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _vgg("vgg8", num_classes, in_channels)


@register_model("vgg11", family="vgg", input_size=CIFAR_INPUT)
def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _vgg("vgg11", num_classes, in_channels)


@register_model("vgg13", family="vgg", input_size=CIFAR_INPUT)
def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _vgg("vgg13", num_classes, in_channels)


@register_model("vgg16", family="vgg", input_size=CIFAR_INPUT)
def vgg16(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _vgg("vgg16", num_classes, in_channels)


@register_model("vgg19", family="vgg", input_size=CIFAR_INPUT)
def vgg19(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _vgg("vgg19", num_classes, in_channels)
