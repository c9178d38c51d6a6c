"""``l1``: L1-sparse gates, preconditioned by their Fisher information, lambda from the budget.

Around the teacher the KL is, to second order, ``sum_j H_j (1 - g_j)^2 / 2`` with ``H_j``
the curvature of ``T^2 KL`` in gate element ``j`` (``T^2`` times its Fisher information at
temperature ``T``, :mod:`kdsearch.search.fisher`). Adding the MAC-weighted L1 penalty
``lambda * sum_j c_j |g_j|`` (``c_j``: the MACs that element saves now) gives the problem the
gates solve, whose solution is

    g_j = max(0, 1 - lambda * c_j / H_j):

a unit is removed exactly when its curvature per MAC ``H_j / c_j`` falls below ``lambda``, so
channels and whole blocks compete on one scale and the channels of one group separate. Each
step moves every gate a fraction ``step`` of the way there, a proximal step preconditioned by
the curvature, with the KL's gradient taken from its second-order model, ``H (g - 1)``::

    g <- max(0, g - step * (H * (g - 1) + lambda * c) / (H + delta))

(a batch's own gradient is too noisy for the gates of little curvature: its noise over
``H`` is far above 1 there, and the gates random-walked with the KL near 10 on the trained
resnet56). ``lambda`` is not a rate: after every step it is set by bisection to the smallest
value whose fixed point (the live units with ``H_j / c_j > lambda``) fits the target MACs,
which fall from the teacher's to the budget; while the live MACs fit, lambda is 0 and no
gate is pushed. The units the fixed point removes ("condemned") get at least
``(1 + margin) * H_j`` of penalty, so that they reach zero in a few steps instead of creeping
towards it, and stay condemned (the next bisection counts them as gone) unless the budget
needs them back; only a condemned gate may reach zero (any other step at most halves a
gate), and a gate at zero stays there. The shrink cannot hide in the weights: the gates
follow the model and the penalty, not what the weights make of them, so a condemned unit
dies whatever the weights do (they train on the KL meanwhile: on digits, freezing them
while selecting left student.pt at 87 % instead of 97 %). The constraints hold in the
fixed point: the ``fewest`` channels of a group with the most curvature carry no penalty,
and a group keeps a multiple of ``channel_multiple`` channels. The MACs of the gates above
zero are then the student's: the selection needs no ranking when the gates alone land on
the budget (``removed_by_rank`` and ``restored_by_rank`` in ``summary.json`` say whether
they did).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdsearch.errors import KdsearchError
from kdsearch.search.fisher import FisherScores, likelihood_gradients
from kdsearch.search.select import LANDING
from kdsearch.search.selectors import Selector, register_selector


@register_selector("l1")
class L1Selector(Selector):
    """Fisher-preconditioned proximal L1 on the gates, lambda set from the MAC target."""

    @dataclass
    class Options:
        step: float = 0.5  # the fraction of the way to the fixed point moved per step
        decay: float = 0.9  # moving-average factor of the per-step Fisher estimates
        margin: float = 0.1  # a condemned unit's fixed point is at most -margin
        # the preconditioner's floor, as a fraction of the mean curvature of the live gates
        # (a gate of no curvature moves by its penalty / delta, not by infinity)
        damping: float = 0.01

        def __post_init__(self) -> None:
            if not (0 < self.step <= 1 and 0 <= self.decay < 1 and self.margin > 0
                    and self.damping > 0):
                raise KdsearchError(
                    f"step must be in (0, 1], decay in [0, 1), margin and damping > 0; not "
                    f"{self.step}, {self.decay}, {self.margin}, {self.damping}")

    def __init__(self, search, options: Options):
        super().__init__(search, options)
        self.fisher = FisherScores(search.bank.gates, options.decay)
        self.lam = 0.0
        self.delta = 1e-30  # the preconditioner's floor (damping x the live gates' mean H)
        # per unit and element, the penalty of the next step (lambda * c, more if condemned)
        self.penalty = {uid: torch.zeros(g.shape) for uid, g in search.bank.gates.items()}
        self.condemned = {uid: torch.zeros(g.shape, dtype=torch.bool)
                          for uid, g in search.bank.gates.items()}

    def observe(self, step: int, logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        grads = likelihood_gradients(dict(self.search.bank.gates), logits, teacher_logits,
                                     self.search.config.temperature, step)
        self.fisher.update(grads)

    def curvature(self) -> dict[str, torch.Tensor]:
        """Per element, H = T^2 * Fisher information of the batch-mean KL: the squared
        gradient of a batch's summed log-likelihood estimates ``batch x`` the mean Fisher."""
        scale = self.search.config.temperature ** 2 / self.search.config.batch_size
        return {uid: v * scale for uid, v in self.fisher.unbiased().items()}

    @torch.no_grad()
    def move_gates(self, step: int) -> None:
        curvature, eta = self.curvature(), self.options.step
        for uid, gate in self.search.bank.gates.items():
            h = curvature[uid].to(gate.device)
            # the KL's gradient in its second-order model, H (g - 1): a batch's own gradient
            # is too noisy a signal for the gates of little curvature (noise / H >> 1)
            slope = h * (gate - 1) + self.penalty[uid].to(gate.device)
            moved = gate - eta * slope / (h + self.delta)
            # only a condemned gate may reach zero; every other step at most halves a gate
            floor = torch.where(self.condemned[uid].to(gate.device), 0.0, gate / 2)
            gate.copy_(torch.where(gate > 0, moved.clamp(max=1.0).maximum(floor), 0.0))

    def after_step(self, step: int, gates: dict[str, torch.Tensor], live: int,
                   target: int) -> dict[str, torch.Tensor]:
        leaving = {uid: self.condemned[uid] & (g > 0) for uid, g in gates.items()}
        plan = FixedPoint(self.search, gates, self.curvature(), leaving)
        # a unit that overshoots matters only where it would leave the student below 97% of
        # the budget: while the target falls, it catches up within a few steps
        lam, self.condemned = plan.threshold(target, floor=LANDING * self.search.budget)
        self.lam = max(lam, 0.0)
        live = torch.cat([h[plan.alive[uid]] for uid, h in plan.curvature.items()])
        self.delta = self.options.damping * max(float(live.mean()) if live.numel() else 0, 1e-30)
        for uid, cost in plan.costs.items():
            push = torch.maximum(self.lam * cost, (1 + self.options.margin) * plan.curvature[uid])
            penalty = torch.where(self.condemned[uid], push, self.lam * cost)
            self.penalty[uid] = torch.where(plan.protected[uid], 0.0, penalty)
        return gates

    def log(self) -> dict[str, float | None]:
        return {"lam": self.lam}

    def state_dict(self) -> dict:
        return {"fisher": self.fisher.state_dict(), "lam": self.lam, "delta": self.delta,
                "penalty": {uid: p.clone() for uid, p in self.penalty.items()},
                "condemned": {uid: c.clone() for uid, c in self.condemned.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.fisher.load_state_dict(state["fisher"])
        self.lam, self.delta = float(state["lam"]), float(state["delta"])
        self.penalty = {uid: p.cpu().clone() for uid, p in state["penalty"].items()}
        self.condemned = {uid: c.cpu().clone() for uid, c in state["condemned"].items()}


class FixedPoint:
    """The units the L1 fixed point keeps for a given lambda, and the lambda of a target.

    Units condemned before and still alive are leaving: they count as gone (a unit's turn
    does not flip back and forth with the noise of its estimate, so no more units die than
    the target asks for), unless the target has come to need them again (``land``).
    """

    def __init__(self, search, gates: dict[str, torch.Tensor],
                 curvature: dict[str, torch.Tensor], leaving: dict[str, torch.Tensor]):
        model, constraints = search.mac_model, search.constraints
        self.model = model
        self.alive = {uid: g > 0 for uid, g in gates.items()}
        self.staying = {uid: alive & ~leaving[uid] for uid, alive in self.alive.items()}
        self.curvature = curvature
        self.sizes = {uid: model.sizes[uid] for uid in gates if uid in model.sizes}
        self.blocks = [uid for uid in gates if uid not in model.sizes]
        self.multiple = max(1, constraints.channel_multiple)
        self.fewest = {uid: constraints.fewest(size) for uid, size in self.sizes.items()}
        self.costs = self._costs()
        self.ratio = {uid: torch.where(self.alive[uid] & (self.costs[uid] > 0),
                                       curvature[uid] / self.costs[uid].clamp_min(1e-30),
                                       math.inf) for uid in gates}
        self.protected = self._protected()

    def _counts(self) -> tuple[dict[str, int], set[str]]:
        kept = {uid: int(self.staying[uid].sum()) for uid in self.sizes}
        return kept, {b for b in self.blocks if not bool(self.staying[b][0])}

    def _costs(self) -> dict[str, torch.Tensor]:
        """Per element, the MACs it saves now: a channel, one channel of its group; a block,
        its branch."""
        (kept, removed), model = self._counts(), self.model
        costs = {}
        for uid, size in self.sizes.items():
            k = max(kept[uid], 1)
            fewer = model.unit_macs(uid, {**kept, uid: k - 1}, removed)
            costs[uid] = torch.full((size,), max(model.unit_macs(uid, kept, removed) - fewer,
                                                 0.0))
        for uid in self.blocks:
            costs[uid] = torch.full((1,), model.unit_macs(uid, kept, removed - {uid}))
        return costs

    def _protected(self) -> dict[str, torch.Tensor]:
        """The ``fewest`` staying channels of each group with the most curvature."""
        protected = {uid: torch.zeros(1, dtype=torch.bool) for uid in self.blocks}
        for uid in self.sizes:
            score = torch.where(self.staying[uid], self.curvature[uid], -1.0)
            top = torch.argsort(score, descending=True, stable=True)[:self.fewest[uid]]
            protected[uid] = torch.zeros(self.sizes[uid], dtype=torch.bool)
            protected[uid][top] = self.staying[uid][top]
        return protected

    def keeps(self, lam: float) -> tuple[dict[str, int], set[str]]:
        """Kept channels per group and removed blocks of the fixed point at ``lam``."""
        kept = {}
        for uid in self.sizes:
            above = self.staying[uid] & (self.protected[uid] | (self.ratio[uid] > lam))
            kept[uid] = self._legal(int(above.sum()), uid)
        removed = {b for b in self.blocks if not bool(self.staying[b][0]) or (
            float(self.ratio[b][0]) <= lam and not bool(self.protected[b][0]))}
        return kept, removed

    def _legal(self, count: int, uid: str) -> int:
        """``count`` rounded up to the channel multiple, no fewer than the floor, no more
        than are staying (rounded down to the multiple there)."""
        step, live = self.multiple, int(self.staying[uid].sum())
        legal = -(-max(count, self.fewest[uid]) // step) * step
        return legal if legal <= live else max(live // step * step, min(live, self.fewest[uid]))

    def threshold(self, target: int, floor: float) -> tuple[float, dict[str, torch.Tensor]]:
        """The smallest lambda whose fixed point fits ``target`` (-1 when the staying units
        fit, the largest when nothing does), and the live elements it removes, per unit
        (those leaving included). Where that would leave fewer than ``floor`` MACs (97% of
        the budget), a coarse unit's going (a block, the channels of a costly group) is
        undone if removing finer ones instead lands within [floor, target]."""
        lam = self._bisect(target)
        if self.model.macs(*self.keeps(lam)) < floor:
            lam = self._spare(target, floor, lam)
        return lam, self._condemned(lam)

    def _spare(self, target: int, floor: float, lam: float) -> float:
        """Keep what is going of one unit (a block, or a channel group's leaving channels:
        a multiple of ``channel_multiple`` leaves together), the costliest that lets the
        bisection land within [floor, target]; the lambda found (``lam`` when none does)."""
        removed = self.keeps(lam)[1]
        going = {uid: torch.nonzero(alive & ~self.staying[uid]).flatten()
                 for uid, alive in self.alive.items()}
        going.update({b: torch.tensor([0]) for b in removed if bool(self.staying[b][0])})
        going = {uid: index for uid, index in going.items() if index.numel()}
        for uid in sorted(going, key=lambda u: -float(self.costs[u][going[u]].sum())):
            was = self.staying[uid].clone(), self.protected[uid].clone()
            self.staying[uid][going[uid]] = self.protected[uid][going[uid]] = True
            spared = self._bisect(target)
            if floor <= self.model.macs(*self.keeps(spared)) <= target:
                return spared
            self.staying[uid], self.protected[uid] = was
        return lam

    def _bisect(self, target: int) -> float:
        """The smallest candidate lambda whose fixed point fits ``target`` (-1: the staying
        units fit)."""
        candidates = torch.cat([r[self.staying[uid] & ~self.protected[uid]]
                                for uid, r in self.ratio.items()])
        candidates = torch.unique(candidates[torch.isfinite(candidates)])  # sorted
        if self.model.macs(*self.keeps(-1.0)) <= target or not candidates.numel():
            return -1.0
        low, high = 0, candidates.numel() - 1
        while low < high:
            middle = (low + high) // 2
            if self.model.macs(*self.keeps(float(candidates[middle]))) <= target:
                high = middle
            else:
                low = middle + 1
        return float(candidates[low])

    def _condemned(self, lam: float) -> dict[str, torch.Tensor]:
        """The live elements that go at ``lam``: those leaving and those the fixed point
        drops (a group's staying channels of least curvature beyond its kept count)."""
        kept, removed = self.keeps(lam)
        condemned = {}
        for uid in self.sizes:
            score = torch.where(self.staying[uid], self.curvature[uid], -1.0)
            score = torch.where(self.protected[uid], math.inf, score)
            order = torch.argsort(score, descending=True, stable=True)
            mask = self.alive[uid].clone()
            mask[order[:kept[uid]]] = False
            condemned[uid] = mask
        for uid in self.blocks:
            condemned[uid] = torch.tensor([uid in removed and bool(self.alive[uid][0])])
        return condemned
