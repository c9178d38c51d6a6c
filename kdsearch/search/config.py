"""Hyper-parameters of the gated search (defaults overridable by presets and the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from kdsearch.errors import KdsearchError

SELECTORS = ("fisher", "l1")


@dataclass
class SearchConfig:
    # settings that may change across a resume, or for a finished search reused: they do
    # not move the search
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"device", "log_every", "checkpoint_every"})

    # the search's length: `steps` when above 0, else `epochs` of the training split (the
    # presets' way: a search on a subset is as short as the subset)
    steps: int = 0
    epochs: float = 1.0
    batch_size: int = 64
    temperature: float = 4.0  # KL(teacher || gated) at this temperature, times T^2
    # how units are chosen while selecting: "fisher" (kdsearch.search.fisher: units removed
    # progressively in order of least Fisher information per MAC, gates held at 0/1) or "l1"
    # (the L1-proximal gates below, lambda following the MACs)
    selector: str = "fisher"
    prune_every: int = 5  # fisher: steps between removals (the network adapts in between)
    fisher_decay: float = 0.9  # fisher: moving-average factor of the per-step estimates
    # SGD (momentum 0.9) on the network weights; with BatchNorm frozen a trained CIFAR
    # resnet56 diverged within 5 steps at 0.01 (KL 0 -> 20), not at 0.001
    lr: float = 0.001
    weight_decay: float = 5e-4  # the l1 * ||w||^2 term of the objective
    gate_lr: float = 0.05  # plain SGD on the gates, then the soft-threshold (proximal) step
    lambda_init: float = 0.1  # weight of the L1 gate penalty, adapted every step
    lambda_rate: float = 0.05  # lambda *= 1 + rate while live MACs are above the target
    ramp: float = 0.5  # the live-MAC target falls linearly to the budget over this fraction
    # the last fraction of the steps: the selection is fixed (pruned gates held at zero) and
    # the weights and kept gates train on the KL alone, so the gated network is the student
    settle: float = 0.25
    max_shrink: float = 0.1  # cap on one proximal step per gate: no unit dies in one step
    # the shrink of a gate below (above) the mean of the live gates is (1 + p) ((1 - p)) times
    # the L1 step: a polarising term (PolarizationPruning, NeurIPS 2020) that separates the
    # gates instead of letting them all fall together
    polarize: float = 0.5
    # while selecting, move each gate's scale back from the weights that read it into the
    # gate after every step (kdsearch.search.scale): shrinking gates cannot hide in growing
    # weights
    transfer_scale: bool = False
    train_weights: bool = True  # False: only the gates move while selecting (weights frozen)
    ce_weight: float = 0.0  # 0: the teacher alone drives the search (unlabeled data is fine)
    cost_refresh: int = 10  # steps between recomputing each gate's MAC cost
    log_every: int = 1
    checkpoint_every: int = 50  # steps between search_checkpoint.pt writes (and at the end)
    device: str = "auto"
    # bf16 autocast and channels-last for the search's forward passes, on CUDA and on CPUs
    # with native bf16 (kdsearch.numerics); extraction is checked in float32 regardless
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0 or (self.steps == 0 and not self.epochs > 0):
            raise KdsearchError(f"the search needs steps > 0 or epochs > 0, not steps "
                                f"{self.steps} and epochs {self.epochs}")
        if self.selector not in SELECTORS:
            raise KdsearchError(f"selector must be one of {', '.join(SELECTORS)}, not "
                                f"{self.selector!r}")
        if self.prune_every < 1 or not 0 <= self.fisher_decay < 1:
            raise KdsearchError(f"prune_every must be >= 1 and fisher_decay in [0, 1), not "
                                f"{self.prune_every} and {self.fisher_decay}")
        if not 0 <= self.settle < 1:
            raise KdsearchError(f"settle is a fraction of the steps in [0, 1), not {self.settle}")
        if not 0 < self.ramp <= 1 - self.settle:
            raise KdsearchError(f"ramp must be in (0, 1 - settle] = (0, {1 - self.settle:g}], "
                                f"not {self.ramp} (the target reaches the budget before the "
                                "selection is fixed)")

    def resolved(self, train_images: int) -> SearchConfig:
        """This config with ``steps`` set: from ``epochs`` of ``train_images`` when 0."""
        if self.steps > 0:
            return self
        steps = max(1, round(self.epochs * train_images / self.batch_size))
        return dataclasses.replace(self, steps=steps)

    def length_text(self) -> str:
        return f"{self.steps} steps" if self.steps > 0 else f"{self.epochs:g} epochs"

    @property
    def select_steps(self) -> int:
        """Steps before the selection is fixed (the rest settle the student)."""
        return max(1, round(self.steps * (1 - self.settle)))
