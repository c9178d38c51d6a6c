"""``fisher``: progressive removal, least Fisher information per MAC first.

Every gate element (a channel of a channel group, or a whole residual block) is held at 1
(kept) or 0 (removed). Every ``every`` steps, while the network's MACs are above the target
(which falls from the teacher's to the budget), units are removed in order of least Fisher
information (:mod:`kdsearch.search.fisher`) per MAC saved until the target is met
(:func:`~kdsearch.search.select.select_to_budget`, so the constraints hold); the weights
keep training on the KL in between, so the network adapts to each removal before the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsearch.errors import KdsearchError
from kdsearch.search.fisher import FisherScores, likelihood_gradients
from kdsearch.search.select import kept_mask, select_to_budget
from kdsearch.search.selectors import Selector, register_selector


@register_selector("fisher")
class FisherSelector(Selector):
    """Removes the units of least Fisher information per MAC every ``every`` steps."""

    @dataclass
    class Options:
        every: int = 5  # steps between removals (the network adapts in between)
        decay: float = 0.9  # moving-average factor of the per-step Fisher estimates

        def __post_init__(self) -> None:
            if self.every < 1 or not 0 <= self.decay < 1:
                raise KdsearchError(f"every must be >= 1 and decay in [0, 1), not "
                                    f"{self.every} and {self.decay}")

    def __init__(self, search, options: Options):
        super().__init__(search, options)
        self.fisher = FisherScores(search.bank.gates, options.decay)

    def observe(self, step: int, logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """The gates' Fisher information times their value: a removed unit (0) ranks last."""
        gates = dict(self.search.bank.gates)
        grads = likelihood_gradients(gates, logits, teacher_logits,
                                     self.search.config.temperature, step)
        self.fisher.update({uid: g * gates[uid].detach() for uid, g in grads.items()})

    def after_step(self, step: int, gates: dict[str, torch.Tensor], live: int,
                   target: int) -> dict[str, torch.Tensor]:
        if live <= target or (step + 1) % self.options.every:
            return gates
        search = self.search
        # a kept element ranks by its score (above every removed one: a tiny floor keeps a
        # zero score alive); a removed one has value 0 and ranks by when it was removed
        ranked = {uid: torch.where(g > 0, self.fisher.values[uid].clamp_min(1e-30), 0.0)
                  for uid, g in gates.items()}
        selection, _ = select_to_budget(search.units, search.mac_model, ranked, target,
                                        search.constraints, search.last_alive, per_mac=True)
        masks = kept_mask(gates, selection)
        search.set_gates(masks)
        return {uid: mask.float() for uid, mask in masks.items()}

    def state_dict(self) -> dict:
        return {"fisher": self.fisher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.fisher.load_state_dict(state["fisher"])
