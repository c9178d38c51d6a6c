"""Hyper-parameters of the gated search (defaults overridable by presets and the CLI)."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kdsearch.errors import KdsearchError
from kdsearch.search.selectors import selector_options

# fewer steps than this, from a preset's epochs of a small training split, draw a warning
FEW_STEPS = 50


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
    # what decides which units go (kdsearch.search.selectors): "l1" (L1-sparse gates,
    # preconditioned by their Fisher information, lambda set from the MAC target) or
    # "fisher" (units removed progressively, least Fisher information per MAC first); l1
    # measured level with fisher at resnet20's MACs and 2.6 points above it at resnet8's
    # (results/search-quality/l1/)
    selector: str = "l1"
    # the selector's own settings (its Options: l1 step, decay, margin, damping; fisher
    # every, decay); a key the selector does not read is refused
    options: dict[str, Any] = field(default_factory=dict)
    # SGD (momentum 0.9) on the network weights; with BatchNorm frozen a trained CIFAR
    # resnet56 diverged within 5 steps at 0.01 (KL 0 -> 20), not at 0.001
    lr: float = 0.001
    weight_decay: float = 5e-4
    # no step moves a weight tensor by more than this fraction of its norm (before
    # momentum): a trained resnet56's steps stay near 3e-4 of it (the cap held 5-9 of the
    # 781 steps of its l1 searches back), an untrained resnet32x4's grew past 1 in four
    # steps and the search diverged; summary.json's capped_steps counts them
    max_update: float = 1e-2
    ramp: float = 0.5  # the live-MAC target falls linearly to the budget over this fraction
    # the last fraction of the steps: the selection is fixed (pruned gates held at zero) and
    # the weights and kept gates train on the KL alone, so the gated network is the student
    settle: float = 0.25
    train_weights: bool = True  # False: only the gates move while selecting (weights frozen)
    ce_weight: float = 0.0  # 0: the teacher alone drives the search (unlabeled data is fine)
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
        self.selector_options()  # an unknown selector or option: a clear error
        if not self.max_update > 0:
            raise KdsearchError(f"max_update must be > 0, not {self.max_update}")
        if not 0 <= self.settle < 1:
            raise KdsearchError(f"settle is a fraction of the steps in [0, 1), not {self.settle}")
        if not 0 < self.ramp <= 1 - self.settle:
            raise KdsearchError(f"ramp must be in (0, 1 - settle] = (0, {1 - self.settle:g}], "
                                f"not {self.ramp} (the target reaches the budget before the "
                                "selection is fixed)")

    def overridden(self, **values: Any) -> SearchConfig:
        """This config with ``values`` set; another ``selector`` without ``options`` starts
        from its own default options (the preset's were the old selector's)."""
        if values.get("selector", self.selector) != self.selector and "options" not in values:
            values["options"] = {}
        return dataclasses.replace(self, **values)

    def selector_options(self) -> Any:
        """The selector's ``Options`` with ``options`` set (checked)."""
        return selector_options(self.selector, self.options)

    def resolved(self, train_images: int) -> SearchConfig:
        """This config with ``steps`` set: from ``epochs`` of ``train_images`` when 0."""
        if self.steps > 0:
            return self
        steps = max(1, round(self.epochs * train_images / self.batch_size))
        if steps < FEW_STEPS:
            warnings.warn(
                f"the search runs only {steps} step{'s' * (steps != 1)} ({self.epochs:g} "
                f"epochs of {train_images} training images in batches of {self.batch_size}): "
                f"the selection has little to go on; pass --steps {FEW_STEPS} or more (the "
                "search then sees images more than once)", stacklevel=2)
        return dataclasses.replace(self, steps=steps)

    def length_text(self) -> str:
        return f"{self.steps} steps" if self.steps > 0 else f"{self.epochs:g} epochs"

    @property
    def select_steps(self) -> int:
        """Steps before the selection is fixed (the rest settle the student)."""
        return max(1, round(self.steps * (1 - self.settle)))
