"""Small CIFAR-style ResNets for scikit-learn's ``digits`` (8x8, one channel, 10 classes).

They reuse :class:`~kdsearch.models.resnet_cifar.CifarResNet`: stage 1 runs at stride 1, so
an 8x8 input goes 8x8 -> 8x8 -> 4x4 -> 2x2 -> pool. Multiply-accumulates at 1x8x8, 10 classes:

===================== ===== ================== ======== =======
model                 depth widths (stem, 1-3) params   MACs
===================== ===== ================== ======== =======
digits_resnet14       14    16, 16, 32, 64     175 K    1.65 M   (the teacher)
digits_resnet8        8     12, 12, 24, 48     44 K     0.43 M   (0.26x: shallow, 3/4 width)
digits_resnet8_half   8     8, 8, 32, 64       72 K     0.50 M   (0.30x: half width at 8x8)
===================== ===== ================== ======== =======

The teacher reaches 98-99% test accuracy (80/20 stratified split) after 20 epochs of SGD
(batch 64, one-cycle, peak lr 0.1) in about 20 seconds on one CPU core; the students reach
98-99% too, in under 10 seconds.

The two hand-designed students spend the same budget (about a quarter of the teacher's
MACs) differently: ``digits_resnet8`` narrows every stage, while ``digits_resnet8_half``
halves only the full-resolution stem and stage 1 (where most of the MACs are) and keeps the
teacher's widths in stages 2 and 3.
"""

from __future__ import annotations

from kdsearch.models.registry import register_model
from kdsearch.models.resnet_cifar import CifarResNet

DIGITS_INPUT = (1, 8, 8)
DIGITS_CLASSES = 10


@register_model("digits_resnet14", family="digits", input_size=DIGITS_INPUT)
def digits_resnet14(num_classes: int = DIGITS_CLASSES, in_channels: int = 1) -> CifarResNet:
    """The digits teacher."""
    return CifarResNet(14, (16, 16, 32, 64), num_classes, in_channels)


@register_model("digits_resnet8", family="digits", input_size=DIGITS_INPUT)
def digits_resnet8(num_classes: int = DIGITS_CLASSES, in_channels: int = 1) -> CifarResNet:
    """Student: one block per stage, 3/4 of the teacher's widths."""
    return CifarResNet(8, (12, 12, 24, 48), num_classes, in_channels)


@register_model("digits_resnet8_half", family="digits", input_size=DIGITS_INPUT)
def digits_resnet8_half(num_classes: int = DIGITS_CLASSES, in_channels: int = 1) -> CifarResNet:
    """Student: one block per stage, half width at 8x8, the teacher's widths after."""
    return CifarResNet(8, (8, 8, 32, 64), num_classes, in_channels)
