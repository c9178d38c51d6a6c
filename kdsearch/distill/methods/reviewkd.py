"""``reviewkd``: Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021).

Each student stage is supervised by the same and the shallower teacher stages ("review"):
the student's features are fused from deep to shallow by attention-based fusion (ABF)
modules and every fused level is matched to one teacher level with the hierarchical
context loss (HCL). Features come from graph taps (:mod:`kdsearch.graph.taps`), so any
traceable pair works, searched students of arbitrary widths included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.distill.losses import cross_entropy
from kdsearch.distill.method import DistillMethod, register_method
from kdsearch.graph.taps import Tap, WithFeatures, stage_taps

HCL_POOL_SIZES = (4, 2, 1)  # the pyramid of HCL: 4x4, 2x2, 1x1 average-pooled maps
MAX_MID_CHANNELS = 512


def hcl_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """Hierarchical context loss, summed over levels (pairs of ``[N, C, H, W]`` maps).

    Per level: ``(MSE(fs, ft) + sum_k w_k * MSE(pool_k(fs), pool_k(ft))) / (1 + sum_k w_k)``
    where ``pool_k`` is adaptive average pooling to ``k x k`` for ``k`` in 4, 2, 1, used
    only when ``k`` is smaller than the map (both H and W), and the weights of the levels
    used are 1/2, 1/4, 1/8 in that order (a 2x2 map uses only ``k = 1``, with weight 1/2).
    MSE is the element mean. Computed in float32.
    """
    levels = zip(student_feats, teacher_feats, strict=True)
    return sum(hcl_level(fs.float(), ft.float()) for fs, ft in levels)


def hcl_level(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """HCL of one level (see :func:`hcl_loss`)."""
    loss, total_weight, weight = F.mse_loss(fs, ft), 1.0, 1.0
    for size in HCL_POOL_SIZES:
        if size >= min(fs.shape[-2:]):
            continue
        weight /= 2
        pooled_fs, pooled_ft = F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)
        loss = loss + weight * F.mse_loss(pooled_fs, pooled_ft)
        total_weight += weight
    return loss / total_weight


def pair_from_deepest(student_taps: list[Tap], teacher_taps: list[Tap]) -> tuple[list, list]:
    """The deepest ``min(len)`` taps of each list (shallow to deep): stages are paired from
    the deepest backwards, and the shallowest stages of the deeper network go unused."""
    count = min(len(student_taps), len(teacher_taps))
    return student_taps[len(student_taps) - count:], teacher_taps[len(teacher_taps) - count:]


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, C, 1, 1]``: the mean over H and W."""
    return feature_map.mean(dim=(2, 3), keepdim=True)


class AttentionFusion(nn.Module):
    """ABF: ``x = BN(conv1x1(feature))``; with a deeper fused map ``y`` (nearest-upsampled
    to x's size) ``z = sigmoid(conv1x1_bias([x, y]))``, ``x = x * z0 + y * z1``; then x is
    resized (nearest) to the teacher's size and the output is ``BN(conv3x3(x))`` with the
    teacher's channels. ``forward`` returns ``(output, x)``; x goes on to the next level.

    As in the authors' code, the resize comes before the 3x3 conv and the resized x goes on
    (equivalent to resizing the output whenever student and teacher levels have one size).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.attention = nn.Conv2d(2 * mid_channels, 2, kernel_size=1) if fuse else None
        self.project = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)  # the authors' initialisation
        nn.init.kaiming_uniform_(self.project[0].weight, a=1)

    def forward(self, feature: torch.Tensor, deeper: torch.Tensor | None,
                out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(feature)
        if self.attention is not None:
            y = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            z = torch.sigmoid(self.attention(torch.cat([x, y], dim=1)))  # [N, 2, H, W]
            x = x * z[:, 0:1] + y * z[:, 1:2]
        if tuple(x.shape[-2:]) != out_size:
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.project(x), x


@register_method("reviewkd")
class ReviewKD(DistillMethod):
    """Knowledge review: ABF fusion of student features, HCL against teacher features.

    ``loss_ce = ce_weight * CE(z_s, y)``;
    ``loss_review = review_weight * min(1, epoch / warmup_epochs) * sum_l HCL(ABF_l, T_l)``.

    Levels: the student's stage outputs (:func:`stage_taps`) plus its globally pooled
    feature (the mean over H, W of its deepest stage output: the input of the final
    linear of a global-average-pooled network), against the teacher's stage outputs taken
    before their final ReLU (``preact=True``) plus its pooled feature (the mean of its
    deepest stage output, after the ReLU). The stem is not a stage. When the two networks
    have different numbers of stages they are paired from the deepest stage backwards.
    ``mid = min(512, channels of the deepest student stage)``. Shapes come from the
    shape-propagating trace of :func:`stage_taps` (a dry forward pass at ``input_size``).

    ``review_weight`` (lambda) of the authors' CIFAR-100 configs: 5.0 for the WRN pairs
    and resnet32x4 -> resnet8x4, 0.6 for resnet56 -> resnet20, 1.0 for resnet110 ->
    resnet32 (pass it with ``--option review_weight=5``; the default is 1.0); CE weight 1.0,
    warm-up 20 epochs.
    The fusion modules are trained (:meth:`extra_parameters`) but are not the student's.
    """

    needs_input_size: ClassVar[bool] = True

    @dataclass
    class Options:
        ce_weight: float = 1.0
        review_weight: float = 1.0  # lambda
        warmup_epochs: int = 20

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 input_size: tuple[int, int, int] | None = None, **options: Any):
        super().__init__(student, teacher, input_size=input_size, **options)
        student_taps, teacher_taps = pair_from_deepest(
            stage_taps(student, input_size), stage_taps(self.teacher, input_size, preact=True))
        teacher_final = stage_taps(self.teacher, input_size)[-1]  # pooled after its ReLU
        # Views sharing the networks' modules, kept out of the state_dict (no duplicate keys).
        self._views = {"student": WithFeatures(student, student_taps),
                       "teacher": WithFeatures(self.teacher, [*teacher_taps, teacher_final])}
        student_shapes = [tap.shape for tap in student_taps] + [(student_taps[-1].shape[0], 1, 1)]
        teacher_shapes = [tap.shape for tap in teacher_taps] + [(teacher_final.shape[0], 1, 1)]
        self.fusions = build_fusions(student_shapes, teacher_shapes)  # deepest first
        self.out_sizes = [tuple(shape[1:]) for shape in reversed(teacher_shapes)]

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, student_maps = self._views["student"](images)
        with torch.no_grad():
            _, teacher_maps = self._views["teacher"](images)
        student_feats = [*student_maps, global_pool(student_maps[-1])]
        teacher_feats = [*teacher_maps[:-1], global_pool(teacher_maps[-1])]
        review = hcl_loss(self.fuse(student_feats), teacher_feats)
        warmup = self.options["warmup_epochs"]
        ramp = min(1.0, epoch / warmup) if warmup > 0 else 1.0
        return logits, {
            "loss_ce": self.options["ce_weight"] * cross_entropy(logits, labels),
            "loss_review": self.options["review_weight"] * ramp * review,
        }

    def fuse(self, student_feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """ABF outputs, shallow to deep (the order of ``student_feats``), fused deep first."""
        outputs, deeper = [], None
        for feature, fusion, size in zip(reversed(student_feats), self.fusions, self.out_sizes,
                                         strict=True):
            output, deeper = fusion(feature, deeper, size)
            outputs.append(output)
        return outputs[::-1]

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.fusions.parameters())


def build_fusions(student_shapes: list[tuple], teacher_shapes: list[tuple]) -> nn.ModuleList:
    """One ABF per level, deepest level first (it has nothing deeper to fuse with)."""
    mid_channels = min(MAX_MID_CHANNELS, student_shapes[-1][0])
    pairs = list(zip(student_shapes, teacher_shapes, strict=True))[::-1]
    return nn.ModuleList(
        AttentionFusion(student[0], mid_channels, teacher[0], fuse=index > 0)
        for index, (student, teacher) in enumerate(pairs)
    )
