"""The gates' Fisher information: how much KL removing each unit costs, estimated per step.

Removing a kept unit (its gate ``g_j: 1 -> 0``) raises KL(teacher || gated) by about
``F_jj / 2`` (second order: at the teacher the first-order term is zero), where ``F_jj`` is
the Fisher information of the gate,

    F_jj = E_x E_{y ~ p_teacher(.|x)} [ (d log p_gated(y|x) / d g_j)^2 ]   (at temperature T).

Each step estimates it from the batch with one label sampled per image from the teacher's
softened distribution: the square of the batch's summed gradient, an unbiased estimate of the
batch's summed per-image terms at the teacher (their cross terms have mean zero), averaged
over steps by an exponential moving average. The estimate is the one of Molchanov et al.
(CVPR 2019, "Importance estimation for neural network pruning": squared gate gradients,
accumulated) and of Theis et al. (2018, "Faster gaze prediction with dense networks and
Fisher pruning"), on labels drawn from the teacher so that no labels are needed and the KL,
not the training loss, is what it measures. Both selectors read it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAMPLE_SEED = 0x5EED  # labels of step s are drawn from a generator seeded SAMPLE_SEED + s


def sampled_log_likelihood(logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float, step: int) -> torch.Tensor:
    """sum_i log p_gated(y_i | x_i) at temperature T, one ``y_i`` per image drawn from the
    teacher's softened distribution (a generator seeded by the step: a resumed search draws
    the same labels)."""
    generator = torch.Generator(device=logits.device).manual_seed(SAMPLE_SEED + step)
    probs = F.softmax(teacher_logits.detach() / temperature, dim=1)
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return -F.cross_entropy(logits / temperature, labels, reduction="sum")


def likelihood_gradients(gates: dict[str, torch.Tensor], logits: torch.Tensor,
                         teacher_logits: torch.Tensor, temperature: float,
                         step: int) -> dict[str, torch.Tensor]:
    """Per unit, d sum_i log p_gated(y_i | x_i) / d g (labels drawn from the teacher); the
    graph is kept for the KL's backward."""
    likelihood = sampled_log_likelihood(logits, teacher_logits, temperature, step)
    grads = torch.autograd.grad(likelihood, list(gates.values()), retain_graph=True)
    return dict(zip(gates, grads, strict=True))


class FisherScores:
    """Moving averages of each gate element's Fisher information (squared gradient)."""

    def __init__(self, gates: dict[str, torch.Tensor], decay: float):
        self.decay = decay
        self.values = {uid: torch.zeros(g.shape) for uid, g in gates.items()}
        self.updates = 0

    def update(self, grads: dict[str, torch.Tensor]) -> None:
        for uid, grad in grads.items():
            square = grad.detach().float().cpu().square()
            self.values[uid].mul_(self.decay).add_(square, alpha=1 - self.decay)
        self.updates += 1

    def unbiased(self) -> dict[str, torch.Tensor]:
        """The averages divided by ``1 - decay^updates`` (they start from zero)."""
        scale = 1 / max(1 - self.decay ** self.updates, 1e-12)
        return {uid: v * scale for uid, v in self.values.items()}

    def state_dict(self) -> dict:
        return {"values": {uid: v.clone() for uid, v in self.values.items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.values = {uid: v.cpu().clone() for uid, v in state["values"].items()}
        self.updates = int(state["updates"])
