"""Progressive selection by the gates' Fisher information: which units the KL needs least.

Every gate element ``g_j`` (a channel of a channel group, or a whole residual block) is held
at 1 (kept) or 0 (pruned) while selecting. Removing a kept unit (``g_j: 1 -> 0``) raises
KL(teacher || gated) by about ``F_jj / 2`` (second order: at the teacher the first-order term
is zero), where ``F_jj`` is the Fisher information of the gate,

    F_jj = E_x E_{y ~ p_teacher(.|x)} [ (d log p_gated(y|x) / d g_j)^2 ]   (at temperature T).

Each step estimates it from the batch with one label sampled per image from the teacher's
softened distribution: the square of the batch's summed gradient, an unbiased estimate of the
batch's summed per-image terms at the teacher (their cross terms have mean zero), averaged
over steps by an exponential moving average. Every ``prune_every`` steps, while the network's
MACs are above the target (which falls from the teacher's to the budget), units are removed
in order of least Fisher information per MAC saved until the target is met
(:func:`~kdsearch.search.select.select_to_budget`, so the constraints hold); the weights keep
training on the KL in between, so the network adapts to each removal before the next.

The estimate is the one of Molchanov et al. (CVPR 2019, "Importance estimation for neural
network pruning": squared gate gradients, accumulated) and of Theis et al. (2018, "Faster
gaze prediction with dense networks and Fisher pruning"), on labels drawn from the teacher
so that no labels are needed and the KL, not the training loss, is what it measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdsearch.graph.units import Constraints, Units
from kdsearch.search.cost import MacModel
from kdsearch.search.select import kept_mask, select_to_budget

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


class FisherScores:
    """Moving averages of each gate element's Fisher information (squared gradient)."""

    def __init__(self, gates: dict[str, torch.Tensor], decay: float):
        self.decay = decay
        self.values = {uid: torch.zeros(g.shape) for uid, g in gates.items()}

    def update(self, grads: dict[str, torch.Tensor]) -> None:
        for uid, grad in grads.items():
            square = grad.detach().float().cpu().square()
            self.values[uid].mul_(self.decay).add_(square, alpha=1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {uid: v.clone() for uid, v in self.values.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.values = {uid: v.cpu().clone() for uid, v in state.items()}


def prune_to(units: Units, mac_model: MacModel, constraints: Constraints,
             gates: dict[str, torch.Tensor], scores: FisherScores, target: int,
             last_alive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per unit, the gate elements kept (bool) after removing the kept elements of least
    Fisher information per MAC saved until the MACs are at most ``target``. Pruned
    elements stay pruned unless the landing restores them (the last pruned first)."""
    live = {uid: (g.detach().cpu() > 0) for uid, g in gates.items()}
    # a kept element ranks by its score (above every pruned one: a tiny floor keeps a
    # zero score alive); a pruned one has value 0 and ranks by when it was pruned
    ranked = {uid: torch.where(live[uid], scores.values[uid].clamp_min(1e-30), 0.0)
              for uid in gates}
    selection, _ = select_to_budget(units, mac_model, ranked, target, constraints,
                                    last_alive, per_mac=True)
    return kept_mask(gates, selection)
