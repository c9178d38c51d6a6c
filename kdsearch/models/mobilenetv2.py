"""MobileNetV2 for CIFAR as defined in the CIFAR distillation model zoo (``mobile_half``).

Matches RepDistiller / mdistiller ``mobilenetv2.py`` with expansion 6 and width 0.5: a
stride-2 3x3 stem, seven stages of inverted residual blocks (``blocks.i.j.conv.0`` .. ``conv.7``:
expand 1x1, depthwise 3x3, project 1x1, each with BN; every block expands, even at ratio 1),
a 1x1 conv to 1280 channels, global average pooling and ``classifier.0``. A 32x32 input ends
at 2x2. ``forward`` returns logits only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdsearch.models.registry import register_family_init, register_model
from kdsearch.models.resnet_cifar import CIFAR_INPUT, init_weights

LAST_CHANNELS = 1280


def stage_settings(expansion: int) -> list[tuple[int, int, int, int]]:
    """(expansion, channels, blocks, first stride) per stage, channels before width scaling."""
    return [
        (1, 16, 1, 1),
        (expansion, 24, 2, 1),
        (expansion, 32, 3, 2),
        (expansion, 64, 4, 2),
        (expansion, 96, 3, 1),
        (expansion, 160, 3, 2),
        (expansion, 320, 1, 1),
    ]


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3) - project (1x1, linear); residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # fixed at construction, so torch.fx traces it away
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with expansion ``expansion`` and channel multiplier ``width``."""

    def __init__(
        self,
        expansion: int = 6,
        width: float = 0.5,
        num_classes: int = 100,
        in_channels: int = 3,
    ):
        super().__init__()
        channels = int(32 * width)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in stage_settings(expansion):
            out_channels = int(c * width)
            stage = []
            for stride in [s] + [1] * (n - 1):
                stage.append(InvertedResidual(channels, out_channels, stride, t))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
        last = int(LAST_CHANNELS * width) if width > 1.0 else LAST_CHANNELS
        self.conv2 = conv_bn_relu(channels, last, 1, stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_mobilenetv2(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for stage in self.blocks:
            out = stage(out)
        out = torch.flatten(self.avgpool(self.conv2(out)), 1)
        return self.classifier(out)


@register_family_init("mobilenetv2")
def init_mobilenetv2(model: nn.Module) -> None:
    """The zoo's initialisation, with the classifier's weights drawn from N(0, 0.01)."""
    init_weights(model)
    nn.init.normal_(model.get_submodule("classifier.0").weight, 0, 0.01)


@register_model("mobilenetv2", family="mobilenetv2", input_size=CIFAR_INPUT)
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: expansion 6, width 0.5."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
