"""The gated search: a gated copy of the teacher trained on the KL to the teacher, units
removed until the MACs fit the budget.

One loop for every selector (:mod:`kdsearch.search.selectors`). Each step: the teacher's and
the gated network's logits on a batch, ``T^2 * KL(softmax(t / T) || softmax(s / T))``, the
selector's look at the graph (:meth:`Selector.observe`), the backward pass, an SGD step on
the weights (momentum 0.9, weight decay; no weight tensor moves by more than ``max_update``
of its norm in one step, so a teacher whose outputs are huge cannot blow up), the
selector's gate update, then the selector sees the live MACs against the target, which
falls linearly from the teacher's MACs to the budget over the first ``ramp`` of the steps.
Both networks run in eval mode: BatchNorm keeps the teacher's statistics, because with batch
statistics scaling every gate of a layer together would cost no KL.

The run has two parts (:meth:`GatedSearch.freeze` between them): selecting, then, for the
last ``settle`` of the steps, the selection fixed (removed gates held at zero, kept gates at
their values) while the weights train on the KL alone, so that the gated network at the end
is the student that is extracted.
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
from kdsearch.search.gates import GateBank, gate_bank
from kdsearch.search.selectors import SELECTORS, Selector


@dataclass
class SearchState:
    step: int
    kl: float
    live_macs: int  # MACs of the network the gates describe (gates above zero kept)
    soft_macs: int  # gate values counted as fractions of their channels (for the figures)
    target_macs: int
    gate_mean: dict[str, float]  # per unit: mean gate value
    gate_alive: dict[str, int]  # per unit: gate elements above zero
    selector: dict[str, float | None]  # the selector's numbers (l1: lambda)


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
                 budget: int, config: SearchConfig, units: Units, constraints: Constraints,
                 numerics: Numerics = FLOAT32_CPU):
        self.gated, self.teacher, self.mac_model = gated, teacher.eval(), mac_model
        self.units, self.constraints = units, constraints
        self.numerics = numerics
        self.bank: GateBank = gate_bank(gated)
        self.budget, self.config = budget, config
        gate_ids = {id(p) for p in self.bank.parameters()}
        weights = [p for p in gated.parameters() if id(p) not in gate_ids]
        self.weight_opt = torch.optim.SGD(weights, lr=config.lr, momentum=0.9,
                                          weight_decay=config.weight_decay)
        self.weights = weights
        for p in weights:
            p.requires_grad_(config.train_weights)
        # steps at which max_update held a weight tensor back (a tensor on the device: read
        # only when written, not a host sync every step)
        self.capped = torch.zeros((), dtype=torch.long)
        # the last step at which each gate element was above zero (-1: never), and its value
        # then (a unit the selection restores comes back at it)
        self.last_alive = {uid: torch.full(g.shape, -1.0) for uid, g in self.bank.gates.items()}
        self.last_value = {uid: torch.ones(g.shape) for uid, g in self.bank.gates.items()}
        self.last_kl: float | None = None  # the KL of the last step taken
        # after the selection (:meth:`freeze`): per unit, the gate elements kept, and the
        # selection as plain values; None before
        self.kept_mask: dict[str, torch.Tensor] | None = None
        self.selected: dict | None = None
        selector = SELECTORS.get(config.selector)
        self.selector: Selector = selector(self, config.selector_options())

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
                    "lower lr or max_update) and start a new run") from None
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
            if progress and not show and (step + 1) % max(1, steps // LOG_LINES) == 0:
                print(f"search step {step + 1}/{steps}: KL {state.kl:.3f}, live MACs "
                      f"{state.live_macs / 1e6:.2f}M (target {state.target_macs / 1e6:.2f}M)",
                      flush=True)  # in a log or a pipe, where no bar shows
        bar.close()
        return history

    @property
    def capped_steps(self) -> int:
        return int(self.capped)

    @property
    def device(self) -> torch.device:
        return next(iter(self.bank.gates.values())).device

    def state_dict(self) -> dict:
        """Everything the next step reads (tensors and plain values only)."""
        return {"gated": self.gated.state_dict(),
                "weight_opt": self.weight_opt.state_dict(),
                "capped_steps": self.capped_steps,
                "last_alive": {uid: t.clone() for uid, t in self.last_alive.items()},
                "last_value": {uid: t.clone() for uid, t in self.last_value.items()},
                "last_kl": self.last_kl,
                "kept_mask": None if self.kept_mask is None else {
                    uid: m.clone() for uid, m in self.kept_mask.items()},
                "selected": self.selected,
                "selector": self.selector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gated.load_state_dict(state["gated"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.capped = torch.tensor(int(state["capped_steps"]), device=self.capped.device)
        self.last_alive = {uid: t.cpu().clone() for uid, t in state["last_alive"].items()}
        self.last_value = {uid: t.cpu().clone() for uid, t in state["last_value"].items()}
        self.last_kl = state["last_kl"]
        mask = state.get("kept_mask")
        self.kept_mask = None if mask is None else {uid: m.cpu().clone() for uid, m in
                                                     mask.items()}
        self.selected = state.get("selected")
        self.selector.load_state_dict(state["selector"])
        for p in self.weights:
            p.requires_grad_(self.config.train_weights or self.selected is not None)

    def freeze(self, kept: dict[str, torch.Tensor], record: dict) -> None:
        """Fix the selection: gate elements not in ``kept`` (bool per unit) go to zero and
        stay there; the steps after it train the weights on the KL alone, so the gated
        network at the end is the student. ``record`` (plain values) describes the
        selection."""
        self.kept_mask = {uid: mask.cpu().bool().clone() for uid, mask in kept.items()}
        self.selected = record
        for p in self.weights:  # the student settles: its weights train from here on
            p.requires_grad_(True)
        with torch.no_grad():  # a kept gate at zero (restored by the ranking) comes back
            for uid, gate in self.bank.gates.items():
                revive = kept[uid].to(gate.device) & (gate == 0)
                gate.copy_(torch.where(revive, self.last_value[uid].to(gate), gate))
        self.set_gates(self.kept_mask, keep_values=True)

    def set_gates(self, masks: dict[str, torch.Tensor], keep_values: bool = False) -> None:
        """Gates to the 0/1 ``masks`` (bool per unit), or, with ``keep_values``, the gates
        outside them to zero."""
        with torch.no_grad():
            for uid, gate in self.bank.gates.items():
                mask = masks[uid].to(gate.device, gate.dtype)
                gate.copy_(gate * mask if keep_values else mask)

    def step(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> SearchState:
        selecting = self.kept_mask is None
        with self.numerics.autocast():
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            logits = self.gated(images)
        logits, teacher_logits = logits.float(), teacher_logits.float()
        kl = kl_to_teacher(logits, teacher_logits, self.config.temperature)
        loss = kl + self.config.ce_weight * F.cross_entropy(logits, labels) \
            if self.config.ce_weight else kl
        if selecting:  # before the KL's backward frees the graph
            self.selector.observe(step, logits, teacher_logits)
        if self.config.train_weights or not selecting:  # no selector reads a gate gradient
            self.weight_opt.zero_grad(set_to_none=True)
            loss.backward(inputs=self.weights)
            self.capped = self.capped.to(self.device) + cap_updates(
                self.weights, self.config.lr, self.config.max_update)
            self.weight_opt.step()
        if selecting:
            self.selector.move_gates(step)
        gates, kl_value = self.snapshot(kl)  # the step's one copy to the host
        if not math.isfinite(kl_value):  # the gates are NaN too: stop before using them
            scale = float(teacher_logits.abs().max())
            raise SearchDiverged(
                f"the search diverged: KL is {kl_value} at step {step}; the teacher's logits "
                f"reach {scale:.3g}" + (" (an untrained teacher's, or one whose BatchNorm "
                                         "statistics do not match its weights?)"
                                         if scale > 100 else ""))
        self.last_kl = kl_value
        live, target = self.live_macs(gates), self.target_macs(step)
        if selecting:
            self.record_alive(step, gates)
            gates = self.selector.after_step(step, gates, live, target)
            live = self.live_macs(gates)
        return SearchState(step, kl_value, live, self.soft_macs(gates), target,
                           {uid: round(float(g.mean()), 5) for uid, g in gates.items()},
                           {uid: int((g > 0).sum()) for uid, g in gates.items()},
                           self.selector.log() if selecting else {})

    def snapshot(self, kl: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        """Every gate and the KL, copied to the host in one transfer."""
        with torch.no_grad():
            flat = torch.cat([kl.detach().reshape(1).float(),
                              *(g.detach().reshape(-1) for g in self.bank.gates.values())]).cpu()
        sizes = [g.numel() for g in self.bank.gates.values()]
        parts = torch.split(flat[1:], sizes)
        return dict(zip(self.bank.gates.keys(), parts, strict=True)), float(flat[0])

    def record_alive(self, step: int, gates: dict[str, torch.Tensor]) -> None:
        for uid, gate in gates.items():
            alive = gate > 0
            self.last_alive[uid].masked_fill_(alive, float(step))
            self.last_value[uid] = torch.where(alive, gate, self.last_value[uid])

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
        values = {uid: float(g.clamp(0, 1).sum()) for uid, g in gates.items()}
        kept = {uid: v for uid, v in values.items() if uid in self.mac_model.sizes}
        blocks = {uid: v for uid, v in values.items() if uid not in self.mac_model.sizes}
        return self.mac_model.macs(kept, set(), blocks)

    def target_macs(self, step: int) -> int:
        """The teacher's MACs falling linearly to the budget over the first ``ramp`` of the
        steps, then the budget."""
        progress = min(1.0, (step + 1) / max(1.0, self.config.ramp * self.config.steps))
        full = self.mac_model.full
        return round(full - (full - self.budget) * progress)


def cap_updates(weights: list[torch.nn.Parameter], lr: float,
                max_update: float) -> torch.Tensor | int:
    """Scale each weight's gradient down where ``lr * |grad| > max_update * |w|`` (norms of
    the whole tensor): no step moves a tensor by more than ``max_update`` of its norm before
    momentum. 1 when it held any tensor back, else 0 (on the weights' device)."""
    grads = [p.grad for p in weights if p.grad is not None]
    if not grads:
        return 0
    owners = [p for p in weights if p.grad is not None]
    with torch.no_grad():
        steps = torch.stack(torch._foreach_norm(grads)) * lr
        sizes = torch.stack(torch._foreach_norm([p.detach() for p in owners]))
        factor = (max_update * sizes / steps.clamp_min(1e-30)).clamp(max=1.0)
        torch._foreach_mul_(grads, list(factor.unbind()))
        return (factor < 1).any().long()


LOG_LINES = 20  # lines a search prints where no progress bar shows (a log, a pipe)


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
