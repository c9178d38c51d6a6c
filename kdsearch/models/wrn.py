"""Wide ResNets (Zagoruyko & Komodakis 2016) as defined in the CIFAR distillation model zoo.

Matches RepDistiller / mdistiller ``wrn.py``: pre-activation basic blocks, three stages of
``n = (depth - 4) / 6`` blocks with widths ``16k, 32k, 64k`` at strides 1, 2, 2, a final
BN-ReLU, global average pooling and a linear layer. Parameter names (``block1.layer.0.bn1``,
``block1.layer.0.convShortcut``, ``fc``, ...) are the reference ones. No dropout (the zoo
models are trained with a drop rate of 0). ``forward`` returns logits only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdsearch.models.registry import register_family_init, register_model
from kdsearch.models.resnet_cifar import CIFAR_INPUT, init_weights

register_family_init("wrn")(init_weights)


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv added to the input.

    When the block changes width, the shortcut is a 1x1 conv applied to the *activated*
    input (as in the reference); otherwise it is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut = None  # reference name, kept so checkpoints load
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``blocks`` pre-activation blocks in ``self.layer``; the first one strides."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        first = PreActBlock(in_planes, out_planes, stride)
        rest = [PreActBlock(out_planes, out_planes, 1) for _ in range(blocks - 1)]
        self.layer = nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: ``depth = 6n + 4``, stage widths ``16, 32, 64`` times ``width``."""

    def __init__(self, depth: int, width: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], stride=1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], stride=2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


def wrn(depth: int, width: int, num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """Any WRN-depth-width, e.g. ``wrn(28, 10)``; the registered names cover the zoo's four."""
    return WideResNet(depth, width, num_classes, in_channels)


@register_model("wrn_16_1", family="wrn", input_size=CIFAR_INPUT)
def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return wrn(16, 1, num_classes, in_channels)


@register_model("wrn_16_2", family="wrn", input_size=CIFAR_INPUT)
def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return wrn(16, 2, num_classes, in_channels)


@register_model("wrn_40_1", family="wrn", input_size=CIFAR_INPUT)
def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return wrn(40, 1, num_classes, in_channels)


@register_model("wrn_40_2", family="wrn", input_size=CIFAR_INPUT)
def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return wrn(40, 2, num_classes, in_channels)
