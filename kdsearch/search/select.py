"""Land exactly on the budget: rank what the gates left, add or remove units until it fits.

The gated search drives gates to zero; what it leaves rarely sits exactly at the budget.
Starting from the gates' own answer (a channel is kept while its gate is above zero, a block
while its gate is), units are removed in order of least gate value (per MAC saved, unless
``per_mac=False``) until the student fits the budget, then units are restored in order of
most gate value (per MAC added) while they still fit. The search ranks by gate value alone,
and only where the gates' own answer misses [97%, 100%] of the budget (``keep_landed``).
Gates that reached zero rank below every live gate, among themselves by how long they
stayed alive. Channels of a unit leave in order of their gate values; the constraints
(fewest channels, channel multiple) hold throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdsearch.graph.units import Constraints, Selection, Units
from kdsearch.search.cost import MacModel


@dataclass
class SelectionReport:
    macs: int
    budget: int
    from_gates_macs: int  # MACs of the gates' own answer, before ranking
    removed_by_rank: list[str] = field(default_factory=list)  # "ch3:-4", "blk2"
    restored_by_rank: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.macs / self.budget


class _State:
    def __init__(self, units: Units, model: MacModel, gates: dict[str, torch.Tensor],
                 constraints: Constraints, last_alive: dict[str, torch.Tensor] | None = None,
                 per_mac: bool = True):
        self.model = model
        self.per_mac = per_mac
        self.gates = {uid: g.detach().float().cpu() for uid, g in gates.items()}
        last_alive = last_alive or {}
        self.age = {uid: last_alive.get(uid, torch.zeros_like(g)).float().cpu()
                    for uid, g in self.gates.items()}
        self.order = {uid: _rank(g, self.age[uid]) for uid, g in self.gates.items()}
        self.sizes = {u.id: u.size for u in units.channels if u.id in gates}
        self.blocks = [u.id for u in units.blocks if u.id in gates]
        self.step = max(1, constraints.channel_multiple)
        self.fewest = {uid: constraints.fewest(size) for uid, size in self.sizes.items()}
        self.kept = {uid: self._legal(int((self.gates[uid] > 0).sum()), uid)
                     for uid in self.sizes}
        self.removed = {b for b in self.blocks if float(self.gates[b][0]) <= 0}

    def _legal(self, k: int, uid: str) -> int:
        k = max(k, self.fewest[uid])
        return min(self.sizes[uid], -(-k // self.step) * self.step)

    def macs(self) -> int:
        return self.model.macs(self.kept, self.removed)

    def score(self, uid: str, index: torch.Tensor, delta: float) -> tuple[bool, float, float]:
        """Rank key of moving these gate elements: live first, value per MAC, then age."""
        value = float(self.gates[uid][index].mean())
        return value > 0, value / delta if self.per_mac else value, float(
            self.age[uid][index].mean())

    def channel_move(self, uid: str, grow: bool) -> tuple[tuple, float, int] | None:
        """(rank key, MACs changed, new count) of moving one step, or None."""
        k, size = self.kept[uid], self.sizes[uid]
        new = min(size, k + self.step) if grow else self._shrunk(k, uid)
        if new is None or new == k:
            return None
        before = self.model.unit_macs(uid, self.kept, self.removed)
        after = self.model.unit_macs(uid, {**self.kept, uid: new}, self.removed)
        delta = abs(after - before)
        if delta == 0:
            return None
        lo, hi = sorted((k, new))
        return self.score(uid, self.order[uid][lo:hi], delta), delta, new

    def _shrunk(self, k: int, uid: str) -> int | None:
        new = k - self.step if k == self.sizes[uid] or k % self.step == 0 else k - k % self.step
        return new if new >= self.fewest[uid] else None

    def block_move(self, uid: str) -> tuple[tuple, float] | None:
        without = self.removed ^ {uid}
        delta = abs(self.model.unit_macs(uid, self.kept, self.removed)
                    - self.model.unit_macs(uid, self.kept, without))
        return (self.score(uid, torch.tensor([0]), delta), delta) if delta else None


def _rank(gates: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing gate value; ties (zero gates) by how long they stayed alive."""
    by_age = torch.argsort(-age, stable=True)
    return by_age[torch.argsort(-gates[by_age], stable=True)]


def select_to_budget(units: Units, model: MacModel, gates: dict[str, torch.Tensor],
                     budget: int, constraints: Constraints,
                     last_alive: dict[str, torch.Tensor] | None = None,
                     per_mac: bool = True,
                     keep_landed: bool = False) -> tuple[Selection, SelectionReport]:
    """Kept channels and removed blocks with MACs <= budget, as close to it as units allow.

    ``per_mac=False`` ranks by gate value alone (a global magnitude ranking);
    ``keep_landed``: the gates' own answer, untouched, when it lies within [97%, 100%] of
    the budget.
    """
    state = _State(units, model, gates, constraints, last_alive, per_mac)
    report = SelectionReport(macs=0, budget=budget, from_gates_macs=state.macs())
    macs = report.from_gates_macs
    landed = keep_landed and LANDING * budget <= macs <= budget
    while macs > budget:
        move = _cheapest_removal(state)
        if move is None:
            break
        report.removed_by_rank.append(move)
        macs = state.macs()
    macs = macs if landed else _fill(state, budget, report)
    if macs < LANDING * budget:
        macs = _swap_blocks_for_channels(state, budget, report, macs)
    report.macs = macs
    selection = Selection(
        kept={uid: sorted(state.order[uid][:k].tolist()) for uid, k in state.kept.items()
              if k < state.sizes[uid]},
        removed_blocks=set(state.removed))
    return selection, report


LANDING = 0.97  # the student should use at least this fraction of the budget


def _fill(state: _State, budget: int, report: SelectionReport) -> int:
    macs = state.macs()
    while (move := _best_restoration(state, budget - macs)) is not None:
        report.restored_by_rank.append(move)
        macs = state.macs()
    return macs


def _swap_blocks_for_channels(state: _State, budget: int, report: SelectionReport,
                              macs: int) -> int:
    """Whole blocks are coarse: try restoring one and paying for it with channels."""
    for block in sorted(sorted(state.removed), key=lambda b: state.block_move(b) or ((0,), 0),
                        reverse=True):
        saved = dict(state.kept), set(state.removed), len(report.removed_by_rank)
        state.removed.discard(block)
        trial = state.macs()
        while trial > budget and (move := _cheapest_removal(state, channels_only=True)):
            report.removed_by_rank.append(move)
            trial = state.macs()
        trial = _fill(state, budget, report) if trial <= budget else trial
        if macs < trial <= budget:
            report.restored_by_rank.append(block)
            macs = trial
            if macs >= LANDING * budget:
                break
        else:
            state.kept, state.removed = saved[0], saved[1]
            del report.removed_by_rank[saved[2]:]
    return macs


def _cheapest_removal(state: _State, channels_only: bool = False) -> str | None:
    best = None
    for uid in state.sizes:
        move = state.channel_move(uid, grow=False)
        if move and (best is None or move[0] < best[0]):
            best = (move[0], uid, move[2])
    for uid in () if channels_only else state.blocks:
        move = None if uid in state.removed else state.block_move(uid)
        if move and (best is None or move[0] < best[0]):
            best = (move[0], uid, None)
    if best is None:
        return None
    return _apply(state, best[1], best[2])


def _best_restoration(state: _State, room: float) -> str | None:
    best = None
    for uid in state.sizes:
        move = state.channel_move(uid, grow=True)
        if move and move[1] <= room and (best is None or move[0] > best[0]):
            best = (move[0], uid, move[2])
    for uid in sorted(state.removed):
        move = state.block_move(uid)
        if move and move[1] <= room and (best is None or move[0] > best[0]):
            best = (move[0], uid, None)
    if best is None:
        return None
    return _apply(state, best[1], best[2])


def _apply(state: _State, uid: str, new_count: int | None) -> str:
    if new_count is None:
        state.removed ^= {uid}
        return uid
    change = new_count - state.kept[uid]
    state.kept[uid] = new_count
    return f"{uid}:{change:+d}"


def kept_mask(gates: dict[str, torch.Tensor], selection: Selection) -> dict[str, torch.Tensor]:
    """Per unit, which gate elements the selection keeps (bool, on the CPU)."""
    masks = {}
    for uid, gate in gates.items():
        mask = torch.ones(gate.shape, dtype=torch.bool)
        if uid in selection.removed_blocks:
            mask[:] = False
        elif uid in selection.kept:
            mask[:] = False
            mask[selection.kept[uid]] = True
        masks[uid] = mask
    return masks


def smallest_macs(units: Units, model: MacModel, constraints: Constraints) -> int:
    """MACs of the smallest student the constraints allow (every unit at its minimum)."""
    searchable = units.searchable()
    gates = {u.id: torch.zeros(u.size) for u in searchable}
    state = _State(units, model, gates, constraints)
    return state.macs()
