"""CIFAR ResNets (He et al. 2016) as defined in the CIFAR distillation model zoo.

Matches RepDistiller / mdistiller ``resnet.py``: a 3x3 stem, three stages of basic blocks
(strides 1, 2, 2), 1x1-conv + BN projection shortcuts wherever the shape changes, global
average pooling and one linear layer. Parameter names (``conv1``, ``layer1.0.downsample.0``,
``fc``, ...) are the reference ones, so the shared CIFAR-100 teacher checkpoints load.

Depth is ``6n + 2`` with ``n`` basic blocks per stage. ``forward`` returns logits only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from kdsearch.models.registry import register_family_init, register_model

CIFAR_INPUT = (3, 32, 32)
NARROW = (16, 16, 32, 64)  # stem, stage 1, stage 2, stage 3
WIDE = (32, 64, 128, 256)  # the "x4" models


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """The 1x1-conv + BN shortcut used when a block changes channels or resolution."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the (projected) input, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.downsample = projection(in_planes, planes, stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu(out)


class CifarResNet(nn.Module):
    """A CIFAR ResNet of ``depth = 6n + 2`` layers.

    ``filters`` gives the stem width and the width of each of the three stages; the stages run
    at strides 1, 2 and 2, so a 32x32 input ends at 8x8 (an 8x8 input at 2x2).
    """

    def __init__(
        self,
        depth: int,
        filters: Sequence[int] = NARROW,
        num_classes: int = 100,
        in_channels: int = 3,
    ):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem, *stages = filters
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(stem, stages[0], blocks_per_stage, stride=1)
        self.layer2 = make_stage(stages[0], stages[1], blocks_per_stage, stride=2)
        self.layer3 = make_stage(stages[1], stages[2], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(stages[2], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` basic blocks; the first one carries the stride and any channel change."""
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_family_init("resnet_cifar")
def init_weights(model: nn.Module) -> None:
    """The zoo's initialisation: He-normal (fan-out) convs, BN at identity, zero linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


@register_model("resnet8", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, NARROW, num_classes, in_channels)


@register_model("resnet14", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(14, NARROW, num_classes, in_channels)


@register_model("resnet20", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(20, NARROW, num_classes, in_channels)


@register_model("resnet32", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, NARROW, num_classes, in_channels)


@register_model("resnet44", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(44, NARROW, num_classes, in_channels)


@register_model("resnet56", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(56, NARROW, num_classes, in_channels)


@register_model("resnet110", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(110, NARROW, num_classes, in_channels)


@register_model("resnet8x4", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, WIDE, num_classes, in_channels)


@register_model("resnet32x4", family="resnet_cifar", input_size=CIFAR_INPUT)
def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, WIDE, num_classes, in_channels)
