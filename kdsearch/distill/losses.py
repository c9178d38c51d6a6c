"""Pure loss functions (no modules, no state), each tested against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. (2015): ``T^2 * KL(p_t || p_s)`` with ``p = softmax(logits / T)``.

    ``KL(p_t || p_s) = sum_c p_t[c] * (log p_t[c] - log p_s[c])`` per sample, averaged over
    the batch ("batchmean"); the ``T^2`` factor keeps gradient magnitudes comparable across
    temperatures. Computed in float32 whatever the input dtype (e.g. bf16 under autocast).
    Logits are ``[N, classes]``; the result is a scalar.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``[N, classes]`` logits against ``[N]`` labels, in float32."""
    return F.cross_entropy(logits.float(), labels)
