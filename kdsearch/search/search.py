"""The gated search: a gated copy of the teacher trained on the KL to the teacher, units
removed until the MACs fit the budget.

Two selectors decide which units go. ``fisher`` (the default, :mod:`kdsearch.search.fisher`)
holds every gate at 1 or 0 and, every ``prune_every`` steps while the live MACs are above
the target, removes the units of least Fisher information per MAC saved. ``l1`` trains the
gates as below.

Objective per step of the ``l1`` selector (Gu & Tresp 2020)::

    T^2 * KL(softmax(t / T) || softmax(s / T))  +  lambda * sum_j cost_j * |g_j|

with ``s`` the gated network's logits, ``t`` the teacher's (no grad), and ``cost_j`` the MACs
gate element ``j`` controls in the current network, divided by the largest such cost (so a
whole residual block weighs as much as all its channels together). Both networks run in
eval mode: BatchNorm keeps the teacher's statistics, because with batch statistics scaling
every gate of a layer together would cost no KL. The network weights take an SGD step on
the KL (weight decay is the ``||w||^2`` term); the gates take an SGD step on the KL followed
by the proximal step of the penalty, ``g <- clamp(g - shrink * f, 0, 1)`` with
``shrink = min(gate_lr * lambda * cost, max_shrink)``, so gates reach exactly zero (the cap
keeps units of equal cost from all dying in the same step). ``f = 1 + polarize * sign(mean -
g)`` over the live gates: gates below the mean fall faster than those above it, so units
separate instead of falling together. ``lambda`` is adapted every step so that the MACs of
the gates *above zero* follow a target that falls linearly from the teacher's MACs to the
budget over the first ``ramp`` of the steps (soft MACs, gate values as fractions, are only
logged: a gate at 0.5 removes nothing).

The run has two parts (:meth:`GatedSearch.freeze` between them): selecting, then, for the
last ``settle`` of the steps, the selection fixed (pruned gates held at zero) while the
weights and the kept gates train on the KL alone, so that the gated network at the end is
the student that is extracted.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm import tqdm

from kdsearch.data import DeviceBatches
from kdsearch.errors import KdsearchError
from kdsearch.graph.units import Constraints, Units
from kdsearch.numerics import FLOAT32_CPU, Numerics
from kdsearch.search.checkpoint import SearchInterrupted
from kdsearch.search.config import SearchConfig
from kdsearch.search.cost import MacModel
from kdsearch.search.fisher import FisherScores, prune_to, sampled_log_likelihood
from kdsearch.search.gates import GateBank, gate_bank
from kdsearch.search.scale import ScaleTransfer


@dataclass
class SearchState:
    step: int
    lam: float
    kl: float
    penalty: float
    live_macs: int  # MACs of the network the gates describe (gates above zero kept)
    soft_macs: int  # gate values counted as fractions of their channels (for the figures)
    target_macs: int
    gate_mean: dict[str, float]  # per unit: mean gate value
    gate_alive: dict[str, int]  # per unit: gate elements above zero


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T, averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


class GatedSearch:
    """Runs the search loop on a gated network; call :meth:`run`."""

    def __init__(self, gated: fx.GraphModule, teacher: torch.nn.Module, mac_model: MacModel,
                 budget: int, config: SearchConfig, numerics: Numerics = FLOAT32_CPU,
                 units: Units | None = None, constraints: Constraints | None = None):
        """``units`` and ``constraints`` are needed by the ``fisher`` selector (the removals
        keep the constraints)."""
        if config.selector == "fisher" and (units is None or constraints is None):
            raise ValueError("the fisher selector needs the units and the constraints")
        self.gated, self.teacher, self.mac_model = gated, teacher.eval(), mac_model
        self.units, self.constraints = units, constraints
        self.numerics = numerics
        self.bank: GateBank = gate_bank(gated)
        self.budget, self.config = budget, config
        self.lam = config.lambda_init
        gate_params = list(self.bank.parameters())
        gate_ids = {id(p) for p in gate_params}
        weights = [p for p in gated.parameters() if id(p) not in gate_ids]
        self.weight_opt = torch.optim.SGD(weights, lr=config.lr, momentum=0.9,
                                          weight_decay=config.weight_decay)
        self.gate_opt = torch.optim.SGD(gate_params, lr=config.gate_lr)
        self.weights = weights
        for p in weights:
            p.requires_grad_(config.train_weights)
        self.transfer = (ScaleTransfer(gated, self.bank)
                         if config.transfer_scale and config.train_weights else None)
        self.costs: dict[str, float] = {}  # per unit: the cost of each of its gate elements
        # the last step at which each gate element was above zero (-1: never), and its value
        # then (a unit the selection restores comes back at it)
        self.last_alive = {uid: torch.full(g.shape, -1.0) for uid, g in self.bank.gates.items()}
        self.last_value = {uid: torch.ones(g.shape) for uid, g in self.bank.gates.items()}
        self.last_kl: float | None = None  # the KL of the last step taken
        # after the selection (:meth:`freeze`): per unit, the gate elements kept, and the
        # selection as plain values; None before
        self.kept_mask: dict[str, torch.Tensor] | None = None
        self.selected: dict | None = None
        self.fisher = FisherScores(self.bank.gates, config.fisher_decay)

    def run(self, batches: DeviceBatches, log=None, progress: bool = True, start: int = 0,
            checkpoints=None, stop=None, end: int | None = None) -> list[SearchState]:
        """Steps ``start .. end - 1`` (``end`` defaults to the last step); the states of the
        steps run here.

        Step ``s`` always sees batch ``s % len(batches)`` of epoch ``s // len(batches)``, so a
        run resumed at ``start`` sees the batches of an uninterrupted one. ``checkpoints``
        (:class:`~kdsearch.search.checkpoint.SearchCheckpoints`) is told of every finished
        step; ``stop`` (:class:`~kdsearch.signals.StopSignals`) is checked after
        each one. A non-finite KL (checked on the host copy each step makes anyway) raises
        :class:`SearchDiverged` naming the step; the last checkpoint is kept.
        """
        history = []
        # BatchNorm keeps the teacher's statistics: with batch statistics, scaling every gate
        # of a layer together would cost nothing (the next BatchNorm undoes it)
        self.gated.eval()
        steps = self.config.steps
        end = steps if end is None else end
        show = progress and sys.stderr.isatty()  # no bar in logs and pipes
        bar = tqdm(range(start, end), desc="search", disable=not show, unit="step",
                   dynamic_ncols=True, initial=start, total=steps)
        stream = _batches_from(batches, start)
        for step in bar:
            images, labels = next(stream)
            try:
                state = self.step(step, images, labels)
            except SearchDiverged as err:
                where = f"; {checkpoints.where()}" if checkpoints else ""
                raise SearchDiverged(
                    f"{err}{where}; the search is deterministic: change the settings (e.g. a "
                    "lower lr or gate_lr) and start a new run") from None
            history.append(state)
            if log and step % self.config.log_every == 0:
                log(state)
            if checkpoints is not None:
                checkpoints.step_done(step + 1, last=step + 1 == steps)
            if stop is not None and stop.requested:
                if checkpoints is not None:
                    checkpoints.write(step + 1)
                where = f"; {checkpoints.where()}" if checkpoints else ""
                raise SearchInterrupted(f"{stop.requested} after search step {step + 1} of "
                                        f"{steps}{where}; rerun with --resume to continue")
            bar.set_postfix(kl=f"{state.kl:.3f}", macs=f"{state.live_macs / 1e6:.2f}M")
        bar.close()
        return history

    @property
    def device(self) -> torch.device:
        return next(iter(self.bank.gates.values())).device

    def state_dict(self) -> dict:
        """Everything the next step reads (tensors and plain values only)."""
        return {"gated": self.gated.state_dict(),
                "weight_opt": self.weight_opt.state_dict(),
                "gate_opt": self.gate_opt.state_dict(),
                "lam": float(self.lam),
                "costs": {uid: float(c) for uid, c in self.costs.items()},
                "last_alive": {uid: t.clone() for uid, t in self.last_alive.items()},
                "last_value": {uid: t.clone() for uid, t in self.last_value.items()},
                "last_kl": self.last_kl,
                "kept_mask": None if self.kept_mask is None else {
                    uid: m.clone() for uid, m in self.kept_mask.items()},
                "selected": self.selected,
                "fisher": self.fisher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gated.load_state_dict(state["gated"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.gate_opt.load_state_dict(state["gate_opt"])
        self.lam = float(state["lam"])
        self.costs = {uid: float(c) for uid, c in state["costs"].items()}
        self.last_alive = {uid: t.cpu().clone() for uid, t in state["last_alive"].items()}
        self.last_value = {uid: t.cpu().clone() for uid, t in state["last_value"].items()}
        self.last_kl = state["last_kl"]
        mask = state.get("kept_mask")
        self.kept_mask = None if mask is None else {uid: m.cpu().clone() for uid, m in
                                                     mask.items()}
        self.selected = state.get("selected")
        self.fisher.load_state_dict(state["fisher"])
        for p in self.weights:
            p.requires_grad_(self.config.train_weights or self.selected is not None)

    def freeze(self, kept: dict[str, torch.Tensor], record: dict) -> None:
        """Fix the selection: gate elements not in ``kept`` (bool per unit) go to zero and
        stay there; the steps after it train the weights and the kept gates on the KL alone,
        so the gated network at the end is the student. ``record`` (plain values) describes
        the selection."""
        self.kept_mask = {uid: mask.cpu().bool().clone() for uid, mask in kept.items()}
        self.selected = record
        for p in self.weights:  # the student settles: its weights train from here on
            p.requires_grad_(True)
        with torch.no_grad():  # a kept gate at zero (restored by the ranking) comes back
            for uid, gate in self.bank.gates.items():
                revive = kept[uid].to(gate.device) & (gate == 0)
                gate.copy_(torch.where(revive, self.last_value[uid].to(gate), gate))
        self._apply_mask()

    def _apply_mask(self) -> None:
        with torch.no_grad():
            for uid, gate in self.bank.gates.items():
                gate.clamp_(0.0, 1.0).mul_(self.kept_mask[uid].to(gate.device, gate.dtype))

    def step(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> SearchState:
        selecting = self.kept_mask is None
        if selecting and step % self.config.cost_refresh == 0:
            self.costs = self.gate_costs()
        with self.numerics.autocast():
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            logits = self.gated(images)
        logits, teacher_logits = logits.float(), teacher_logits.float()
        kl = kl_to_teacher(logits, teacher_logits, self.config.temperature)
        loss = kl + self.config.ce_weight * F.cross_entropy(logits, labels) \
            if self.config.ce_weight else kl
        fisher = selecting and self.config.selector == "fisher"
        if fisher:  # the gates' Fisher information, before the KL's backward frees the graph
            self.estimate_fisher(logits, teacher_logits, step)
        self.weight_opt.zero_grad(set_to_none=True)
        self.gate_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train_weights or not selecting:
            self.weight_opt.step()  # (frozen weights have no gradient and stay as they are)
        if self.config.selector != "fisher":  # fisher's gates stay at 0/1: masks
            self.gate_opt.step()
        if selecting and not fisher:
            self.proximal_step()
            if self.transfer is not None:
                self.transfer.apply(self.bank.gates, self.weight_opt)
        elif not selecting:
            self._apply_mask()
        gates, kl_value = self.snapshot(kl)  # the step's one copy to the host
        if not math.isfinite(kl_value):  # the gates are NaN too: stop before using them
            raise SearchDiverged(f"the search diverged: KL is {kl_value} at step {step}")
        self.last_kl = kl_value
        live, target = self.live_macs(gates), self.target_macs(step)
        if selecting:
            self.record_alive(step, gates)
        if fisher and live > target and (step + 1) % self.config.prune_every == 0:
            gates = self.prune(gates, target)
            live = self.live_macs(gates)
        elif selecting and not fisher:
            # lambda follows the MACs of the gates above zero: a gate at 0.5 removes nothing
            self.lam *= (1 + self.config.lambda_rate) if live > target else 1 / (
                1 + self.config.lambda_rate)
        penalty = self.penalty(gates) if selecting and not fisher else 0.0
        return SearchState(step, self.lam, kl_value, penalty,
                           live, self.soft_macs(gates), target,
                           {uid: round(float(g.mean()), 5) for uid, g in gates.items()},
                           {uid: int((g > 0).sum()) for uid, g in gates.items()})

    def estimate_fisher(self, logits: torch.Tensor, teacher_logits: torch.Tensor,
                        step: int) -> None:
        """Add this batch's estimate of each gate's Fisher information (the gradient of the
        log-likelihood of labels drawn from the teacher, squared) to the moving averages."""
        gates = dict(self.bank.gates)
        likelihood = sampled_log_likelihood(logits, teacher_logits, self.config.temperature,
                                            step)
        grads = torch.autograd.grad(likelihood, list(gates.values()), retain_graph=True)
        # the Fisher information of the gate times its value: a pruned unit (0) ranks last
        self.fisher.update({uid: g * gates[uid].detach()
                            for (uid, g) in zip(gates, grads, strict=True)})

    def prune(self, gates: dict[str, torch.Tensor], target: int) -> dict[str, torch.Tensor]:
        """Remove the units of least Fisher information per MAC until ``target`` is met;
        the gates after it (host copies)."""
        masks = prune_to(self.units, self.mac_model, self.constraints, gates, self.fisher,
                         target, self.last_alive)
        with torch.no_grad():
            for uid, gate in self.bank.gates.items():
                gate.copy_(masks[uid].to(gate.device, gate.dtype))
        return {uid: mask.float() for uid, mask in masks.items()}

    def snapshot(self, kl: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        """Every gate and the KL, copied to the host in one transfer."""
        with torch.no_grad():
            flat = torch.cat([kl.detach().reshape(1).float(),
                              *(g.detach().reshape(-1) for g in self.bank.gates.values())]).cpu()
        sizes = [g.numel() for g in self.bank.gates.values()]
        parts = torch.split(flat[1:], sizes)
        return dict(zip(self.bank.gates.keys(), parts, strict=True)), float(flat[0])

    def proximal_step(self) -> None:
        """g <- clamp(g - shrink, 0, 1): the proximal operator of the L1 penalty with gates
        kept in [0, 1] (shrink capped per step)."""
        scale = self.config.gate_lr * self.lam
        polar = self.config.polarize
        with torch.no_grad():
            live = torch.cat([g[g > 0] for g in self.bank.gates.values()])
            mean = live.mean() if live.numel() else 0.0
            for uid, gate in self.bank.gates.items():
                shrink = min(scale * self.costs[uid], self.config.max_shrink)
                # polarisation: gates below the mean of the live gates shrink faster, those
                # above it slower, so the gates separate instead of falling together
                factor = 1 + polar * torch.sign(mean - gate) if polar else 1.0
                gate.sub_(shrink * factor).clamp_(0.0, 1.0)

    def record_alive(self, step: int, gates: dict[str, torch.Tensor]) -> None:
        for uid, gate in gates.items():
            alive = gate > 0
            self.last_alive[uid].masked_fill_(alive, float(step))
            self.last_value[uid] = torch.where(alive, gate, self.last_value[uid])

    def penalty(self, gates: dict[str, torch.Tensor]) -> float:
        """lambda * sum_j cost_j * |g_j| (gates are non-negative)."""
        return self.lam * sum(self.costs[uid] * float(g.sum()) for uid, g in gates.items())

    def kept_counts(self, gates: dict[str, torch.Tensor]) -> tuple[dict[str, int], set[str]]:
        kept, removed = {}, set()
        for uid, gate in gates.items():
            alive = int((gate > 0).sum())
            if uid in self.mac_model.sizes:
                kept[uid] = alive
            elif alive == 0:
                removed.add(uid)
        return kept, removed

    def live_macs(self, gates: dict[str, torch.Tensor]) -> int:
        return self.mac_model.macs(*self.kept_counts(gates))

    def soft_macs(self, gates: dict[str, torch.Tensor]) -> int:
        """MACs with each gate counted as the fraction of its channel (or block) kept."""
        values = {uid: float(g.sum()) for uid, g in gates.items()}
        kept = {uid: v for uid, v in values.items() if uid in self.mac_model.sizes}
        blocks = {uid: v for uid, v in values.items() if uid not in self.mac_model.sizes}
        return self.mac_model.macs(kept, set(), blocks)

    def target_macs(self, step: int) -> int:
        """The teacher's MACs falling linearly to the budget over the first ``ramp`` of the
        steps, then the budget."""
        progress = min(1.0, (step + 1) / max(1.0, self.config.ramp * self.config.steps))
        full = self.mac_model.full
        return round(full - (full - self.budget) * progress)

    def gate_costs(self) -> dict[str, float]:
        """MACs that one gate element saves in the current network, normalised so that the
        costliest gate (usually a whole residual block) has cost 1."""
        with torch.no_grad():
            gates = {uid: g.detach().cpu() for uid, g in self.bank.gates.items()}
        kept, removed = self.kept_counts(gates)
        raw = {}
        for uid in self.bank.gates:
            if uid in self.mac_model.sizes:
                k = max(kept[uid], 1)
                full = self.mac_model.unit_macs(uid, {**kept, uid: k}, removed)
                fewer = self.mac_model.unit_macs(uid, {**kept, uid: k - 1}, removed)
                raw[uid] = max(full - fewer, 0.0)
            else:
                raw[uid] = self.mac_model.unit_macs(uid, kept, removed - {uid})
        top = max(raw.values(), default=0.0) or 1.0
        return {uid: cost / top for uid, cost in raw.items()}


class SearchDiverged(KdsearchError):
    """The KL became NaN or infinite; the last checkpoint is kept."""


def _batches_from(batches: DeviceBatches,
                  start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of steps ``start, start + 1, ...``: step ``s`` gets batch
    ``s % len(batches)`` of epoch ``s // len(batches)`` (each epoch's batches depend only on
    the seed and the epoch)."""
    epoch, skip = divmod(start, len(batches))
    while True:
        batches.set_epoch(epoch)
        yield from itertools.islice(batches, skip, None)
        epoch, skip = epoch + 1, 0
