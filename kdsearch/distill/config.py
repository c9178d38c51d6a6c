"""Training settings: :class:`TrainConfig`, the learning-rate schedule and the device's
:class:`Runtime` (``resolve_device`` is re-exported from :mod:`kdsearch.numerics`).

Defaults are the CIFAR-100 distillation benchmark recipe (CRD / mdistiller, METHODS.md):
SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr x0.1 at epochs
150, 180 and 210.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from kdsearch.distill.distributed import local_device
from kdsearch.errors import KdsearchError
from kdsearch.numerics import Numerics, resolve_device
from kdsearch.steps import config_changes

RECIPE_EPOCHS = 240
RECIPE_MILESTONES = (150, 180, 210)
SCHEDULES = ("step", "cosine")


@dataclass
class TrainConfig:
    """Everything that decides how a run trains (the method's own options included)."""

    # settings that may change between an interrupted (or finished) run and its resume:
    # they do not change what is computed on a given machine, or are about speed only
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "checkpoint_every", "device", "compile", "cache_teacher", "eval_every", "test_subset"})

    epochs: int = RECIPE_EPOCHS
    batch_size: int = 64
    lr: float = 0.05  # the recipe uses 0.01 for MobileNetV2 / ShuffleNetV2 students
    momentum: float = 0.9
    weight_decay: float = 5e-4  # applied to every parameter, BatchNorm included (as mdistiller)
    nesterov: bool = False
    # lr is multiplied by lr_decay when these fractions of `epochs` are done: 150/240,
    # 180/240, 210/240 of the recipe. A shorter --epochs scales them proportionally, e.g.
    # 24 epochs -> decays after epochs 15, 18 and 21 (see milestone_epochs).
    lr_milestones: tuple[float, ...] = tuple(m / RECIPE_EPOCHS for m in RECIPE_MILESTONES)
    lr_decay: float = 0.1
    # "step": the milestones above; "cosine": lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2,
    # from lr at epoch 1 towards 0 (short schedules on the CPU)
    schedule: str = "step"
    eval_batch_size: int = 1024  # evaluation only: BN is in eval mode, any size gives the same
    eval_every: int = 1  # test every N epochs (the last epoch always, on the whole test split)
    test_subset: int | None = None  # test the epochs before the last on N seeded test images
    seed: int = 0  # seeds the batch order, augmentation and torch's RNG, per epoch
    device: str = "auto"  # "auto": cuda if available, else cpu
    checkpoint_every: int = 1  # epochs between checkpoint.pt writes (and always at the end)
    compile: bool = False  # torch.compile the student and teacher (slow start, faster steps)
    # bf16 autocast and channels-last: on CUDA and on CPUs with native bf16 (else float32)
    amp: bool = True
    channels_last: bool = True
    # Look up the teacher's logits of augmented views seen in earlier epochs instead of
    # recomputing them (exact; logit-only methods; memory: see kdsearch.distill.teacher_cache).
    cache_teacher: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"temperature": 4}

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        check_config(self)

    def milestone_epochs(self) -> list[int]:
        """Epochs after which lr decays: ``round(fraction * epochs)``, sorted, in 1..epochs."""
        return sorted(min(self.epochs, max(1, round(m * self.epochs))) for m in self.lr_milestones)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of (1-based) ``epoch``: a pure function, so resume needs no state."""
        if self.schedule == "cosine":
            return self.lr * (1 + math.cos(math.pi * (epoch - 1) / self.epochs)) / 2
        decays = sum(1 for milestone in self.milestone_epochs() if epoch > milestone)
        return self.lr * self.lr_decay**decays

    def schedule_text(self) -> str:
        """One line describing the lr schedule, saying when milestones were scaled."""
        if self.schedule == "cosine":
            last = self.lr_at(self.epochs)
            return f"lr {self.lr:g}, cosine to {last:.3g} over {plural_epochs(self.epochs)}"
        effective = [m for m in self.milestone_epochs() if m < self.epochs]  # a decay after
        if not effective:  # the last epoch changes nothing
            return f"lr {self.lr:g}, constant over {plural_epochs(self.epochs)}"
        counts = {m: effective.count(m) for m in effective}
        milestones = ", ".join(str(m) if n == 1 else f"{m} (x{n})" for m, n in counts.items())
        text = f"lr {self.lr:g}, x{self.lr_decay:g} after epochs {milestones} of {self.epochs}"
        recipe = tuple(m / RECIPE_EPOCHS for m in RECIPE_MILESTONES)
        if self.lr_milestones == recipe and self.epochs != RECIPE_EPOCHS:
            text += " (the recipe's 150/180/210 of 240, scaled to the epochs)"
        return text

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_config(config: TrainConfig) -> None:
    """Raise :class:`KdsearchError` for a setting that cannot work, naming it."""
    if config.schedule not in SCHEDULES:
        raise KdsearchError(f"unknown schedule {config.schedule!r} (choose from "
                            f"{', '.join(SCHEDULES)})")
    if config.test_subset is not None and config.test_subset < 1:
        raise KdsearchError(f"test_subset must be at least 1, not {config.test_subset}")
    for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "eval_every"):
        if getattr(config, name) < 1:
            raise KdsearchError(f"{name} must be at least 1, not {getattr(config, name)}")
    if config.lr <= 0 or config.lr_decay <= 0:
        raise KdsearchError(f"lr and lr_decay must be positive, not {config.lr}/{config.lr_decay}")
    if any(not 0 < m <= 1 for m in config.lr_milestones):
        raise KdsearchError(
            f"lr_milestones are fractions of the epochs in (0, 1], not {config.lr_milestones}"
        )
    if config.seed < 0:
        raise KdsearchError(f"seed must be non-negative, not {config.seed}")


def plural_epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def resume_conflicts(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``"name: saved -> now"`` for each setting that differs from a checkpoint's config
    (except :attr:`TrainConfig.RESUMABLE`)."""
    return config_changes(saved, config)


class Runtime:
    """How a config applies to the device: placement, numerics (:class:`Numerics`), compile.

    bf16 autocast and channels-last are taken on CUDA and on CPUs with native bf16 (see
    :mod:`kdsearch.numerics`); elsewhere the run stays float32 and contiguous whatever the
    config says. Under torchrun each process takes ``cuda:LOCAL_RANK``
    (:func:`kdsearch.distill.distributed.local_device`).
    """

    def __init__(self, device: torch.device, amp: bool, channels_last: bool):
        self.device = device
        self.numerics = Numerics.for_device(device, amp, channels_last)
        self.amp = self.numerics.amp
        self.channels_last = self.numerics.channels_last

    @classmethod
    def for_config(cls, config: TrainConfig) -> Runtime:
        device = local_device(resolve_device(config.device))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
        return cls(device, config.amp, config.channels_last)

    def place(self, model: torch.nn.Module, compile_models: bool = False) -> None:
        """Move ``model`` (a method: student, teacher, extras) to the device, in place."""
        model.to(self.device)
        self.numerics.place(model)
        for name in ("student", "teacher") if compile_models else ():
            part = getattr(model, name, None)
            if part is not None:
                part.compile()  # in place: state_dict keys are unchanged

    def autocast(self):
        """bf16 autocast when the numerics have it, else a no-op context."""
        return self.numerics.autocast()

    def describe(self) -> str:
        return f"{self.device} ({self.numerics.name}, {torch.get_num_threads()} threads)" \
            if self.device.type == "cpu" else f"{self.device} ({self.numerics.name})"
