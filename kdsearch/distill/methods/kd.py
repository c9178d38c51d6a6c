"""``kd``: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsearch.distill.losses import cross_entropy, kd_loss
from kdsearch.distill.method import DistillMethod, register_method


@register_method("kd")
class HintonKD(DistillMethod):
    """Soft-target distillation from the teacher's logits.

    ``loss_ce = ce_weight * CE(z_s, y)``;
    ``loss_kd = kd_weight * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (batchmean).

    Defaults are the CIFAR-100 benchmark recipe of the CRD / mdistiller model zoo:
    T = 4, CE weight 0.1, KD weight 0.9.
    """

    teacher_logits_only = True  # reads nothing of the teacher but its logits: cacheable

    @dataclass
    class Options:
        temperature: float = 4.0
        ce_weight: float = 0.1
        kd_weight: float = 0.9

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images)
        kd = kd_loss(logits, teacher_logits, self.options["temperature"])
        return logits, {
            "loss_ce": self.options["ce_weight"] * cross_entropy(logits, labels),
            "loss_kd": self.options["kd_weight"] * kd,
        }
