"""``dgkd``: Son, Na, Choi & Han, "Densely Guided Knowledge Distillation using Multiple
Teacher Assistants" (ICCV 2021). The chain of models is :mod:`kdsearch.distill.chain`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from kdsearch.distill.losses import cross_entropy, kd_loss
from kdsearch.distill.method import DistillMethod, freeze, register_method
from kdsearch.errors import KdsearchError


def sample_guides(count: int, keep_prob: float) -> list[bool]:
    """Stochastic DGKD: keep each of ``count`` guides with probability ``keep_prob``.

    If the draw keeps none, one guide chosen uniformly at random is kept, so each guide is
    kept with probability ``p + (1 - p)^n / n`` (0.7552 for p = 0.75, n = 3). Draws come from
    torch's global CPU generator, which the trainer re-seeds every epoch: a resumed run
    drops the same guides. ``keep_prob >= 1`` keeps every guide and draws nothing.
    """
    if keep_prob >= 1 or count <= 1:
        return [True] * count
    keep = (torch.rand(count) < keep_prob).tolist()
    if not any(keep):
        keep[int(torch.randint(count, ()))] = True
    return keep


def dgkd_loss(student_logits: torch.Tensor, guide_logits: Sequence[torch.Tensor],
              temperature: float) -> torch.Tensor:
    """``sum_k T^2 KL(softmax(z_k / T) || softmax(z_s / T))`` over the guides (batchmean).

    Each term is :func:`~kdsearch.distill.losses.kd_loss`; no guide at all gives 0.
    """
    total = student_logits.new_zeros((), dtype=torch.float32)
    for logits in guide_logits:
        total = total + kd_loss(student_logits, logits, temperature)
    return total


@register_method("dgkd")
class DGKD(DistillMethod):
    """Densely guided KD: the student learns from the teacher and every trained assistant.

    ``loss_ce = (1 - lambda) * CE(z_s, y)``;
    ``loss_kd = lambda * sum over kept guides k of T^2 KL(softmax(z_k/T) || softmax(z_s/T))``
    (batchmean), guides = teacher + ``assistants``; each guide is kept per mini-batch with
    probability ``keep_prob`` (stochastic DGKD, at least one kept, no rescaling of the sum).

    The paper writes ``(n+1)(1 - lambda) CE + lambda sum_k KL_k`` for ``n`` assistants; the
    reference code drops the ``(n+1)`` and averages the KL over batch *and* classes (its KD
    term is this one divided by the number of classes C). The paper's loss equals ours up to
    a constant factor with ``lambda_ours = lambda / (lambda + (n+1)(1 - lambda))``; at the
    reference default ``lambda = 1`` all three are pure distillation (no CE) and ours is C
    times the reference code's loss (scale the learning rate accordingly to match it).

    Defaults are the reference's: T = 5, lambda (``kd_weight``) = 1, so no label term;
    ``keep_prob`` = 0.75, the paper's best for the final student (with the teacher as the
    only guide it is always kept, and this is Hinton KD at T = 5). ``assistants`` (trained
    modules, default none) is a constructor argument, not a stored option: the modules are
    frozen, kept in eval mode and are part of ``state_dict()``.
    """

    trains_a_chain: ClassVar[bool] = True  # kdsearch train runs kdsearch.distill.chain

    @dataclass
    class Options:
        temperature: float = 5.0
        kd_weight: float = 1.0  # lambda
        keep_prob: float = 0.75

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 input_size: tuple[int, int, int] | None = None,
                 assistants: Sequence[nn.Module] = (), **options: Any):
        super().__init__(student, teacher, input_size=input_size, **options)
        if isinstance(assistants, str) or not all(isinstance(a, nn.Module) for a in assistants):
            raise KdsearchError("dgkd assistants are trained modules (the DGKD chain passes "
                                "them; use --assistants on the command line)")
        if not 0 <= self.options["kd_weight"] <= 1 or not 0 < self.options["keep_prob"] <= 1:
            raise KdsearchError("method 'dgkd' needs kd_weight in [0, 1] and keep_prob in "
                                f"(0, 1], not {self.options['kd_weight']}/"
                                f"{self.options['keep_prob']}")
        self.assistants = nn.ModuleList(freeze(a) for a in assistants)

    def guides(self) -> list[nn.Module]:
        """The teacher, then the assistants (largest first, as given)."""
        return [self.teacher, *self.assistants]

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        guides = self.guides()
        keep = sample_guides(len(guides), self.options["keep_prob"])
        with torch.no_grad():
            guide_logits = [guide(images) for guide, kept in zip(guides, keep, strict=True)
                            if kept]
        kd = dgkd_loss(logits, guide_logits, self.options["temperature"])
        weight = self.options["kd_weight"]
        return logits, {"loss_ce": (1 - weight) * cross_entropy(logits, labels),
                        "loss_kd": weight * kd}

    def train(self, mode: bool = True) -> DGKD:
        super().train(mode)
        self.assistants.eval()
        return self
