"""``ce``: plain supervised training, the baseline and the way teachers are trained."""

from __future__ import annotations

import torch

from kdsearch.distill.losses import cross_entropy
from kdsearch.distill.method import DistillMethod, register_method


@register_method("ce")
class CrossEntropy(DistillMethod):
    """Cross-entropy on the labels only; no teacher is used (``teacher`` may be ``None``).

    ``loss_ce = CE(z_s, y)``.
    """

    needs_teacher = False

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        return logits, {"loss_ce": cross_entropy(logits, labels)}
