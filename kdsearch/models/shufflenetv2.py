"""ShuffleNetV2 (1x) for CIFAR as defined in the CIFAR distillation model zoo (``ShuffleV2``).

Matches RepDistiller / mdistiller ``ShuffleNetv2.py`` at net size 1: a 1x1 stem to 24
channels at full resolution (no stem pooling), three stages of one stride-2 ``DownBlock``
followed by 3, 7 and 3 ``BasicBlock``\\ s (116, 232, 464 channels), a 1x1 conv to 1024
channels, global average pooling and ``linear``. A 32x32 input ends at 4x4. Parameter names
are the reference ones. The reference's size-dependent split and shuffle are written with
constant channel counts so the model traces with ``torch.fx``. ``forward`` returns logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdsearch.models.registry import register_model
from kdsearch.models.resnet_cifar import CIFAR_INPUT

STEM_CHANNELS = 24
STAGE_CHANNELS = (116, 232, 464)
STAGE_BLOCKS = (3, 7, 3)  # basic blocks after each stage's down block
LAST_CHANNELS = 1024


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """[N, g*c, H, W] -> [N, c*g, H, W], interleaving the ``groups`` channel groups."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, depthwise: bool = False):
    """A bias-free conv (depthwise if asked) and its BN, as a pair of modules."""
    groups = in_ch if depthwise else 1
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_ch)


class BasicBlock(nn.Module):
    """Pass the first half of the channels through; 1x1-dw3x3-1x1 on the second; shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        self.conv1, self.bn1 = conv_bn(self.half, self.half, 1)
        self.conv2, self.bn2 = conv_bn(self.half, self.half, 3, depthwise=True)
        self.conv3, self.bn3 = conv_bn(self.half, self.half, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = x[:, : self.half], x[:, self.half :]
        out = self.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = self.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1))


class DownBlock(nn.Module):
    """Two stride-2 branches, each producing half of ``out_channels``; concat; shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left: dw3x3 (stride 2) - 1x1
        self.conv1, self.bn1 = conv_bn(in_channels, in_channels, 3, 2, depthwise=True)
        self.conv2, self.bn2 = conv_bn(in_channels, mid, 1)
        # right: 1x1 - dw3x3 (stride 2) - 1x1
        self.conv3, self.bn3 = conv_bn(in_channels, mid, 1)
        self.conv4, self.bn4 = conv_bn(mid, mid, 3, 2, depthwise=True)
        self.conv5, self.bn5 = conv_bn(mid, mid, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = self.relu(self.bn2(self.conv2(left)))
        right = self.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = self.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1))


def make_stage(in_channels: int, out_channels: int, basic_blocks: int) -> nn.Sequential:
    blocks = [DownBlock(in_channels, out_channels)]
    blocks += [BasicBlock(out_channels) for _ in range(basic_blocks)]
    return nn.Sequential(*blocks)


class ShuffleNetV2(nn.Module):
    """The CIFAR ShuffleNetV2 1x: 32x32 -> 16 -> 8 -> 4 -> pool -> ``linear``."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        c1, c2, c3 = STAGE_CHANNELS
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(STEM_CHANNELS, c1, STAGE_BLOCKS[0])
        self.layer2 = make_stage(c1, c2, STAGE_BLOCKS[1])
        self.layer3 = make_stage(c2, c3, STAGE_BLOCKS[2])
        self.conv2, self.bn2 = conv_bn(c3, LAST_CHANNELS, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(LAST_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


@register_model("shufflenetv2", family="shufflenetv2", input_size=CIFAR_INPUT)
def shufflenetv2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """RepDistiller's ``ShuffleV2`` (net size 1)."""
    return ShuffleNetV2(num_classes, in_channels)
