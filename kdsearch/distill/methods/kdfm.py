"""``kdfm``: Chen, Wang & Zhang, "Knowledge Distillation with Feature Maps for Image
Classification" (ACCV 2018).

The student learns the teacher's final feature map with two techniques: a *shared
classifier* (the student's map, adapted to the teacher's shape, is classified by the
teacher's own frozen head) and a *GAN* (a discriminator tells teacher maps from adapted
student maps; the student learns to fool it). The paper's loss weights, discriminator and
schedule are not known: the choices below are documented options, not the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.distill.losses import cross_entropy, kd_loss
from kdsearch.distill.method import DistillMethod, register_method
from kdsearch.graph.taps import WithFeatures, head_after, stage_taps

LEAKY_SLOPE = 0.2


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the student: ``-log sigmoid(D(fake))`` = BCE(D(fake), real),
    averaged over the batch."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))``, averaged over the batch."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def resize_to(feature_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``feature_map`` at spatial ``size``: average-pooled when shrinking, nearest-upsampled
    otherwise (unchanged when already that size)."""
    height, width = feature_map.shape[-2:]
    if (height, width) == size:
        return feature_map
    if height >= size[0] and width >= size[1]:
        return F.adaptive_avg_pool2d(feature_map, size)
    return F.interpolate(feature_map, size=size, mode="nearest")


class Adapter(nn.Module):
    """``resize(BN(conv1x1(student map)))`` to the teacher's map channels and size."""

    def __init__(self, in_channels: int, out_channels: int, out_size: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.out_size = out_size

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return resize_to(self.norm(self.conv(feature_map)), self.out_size)


def feature_discriminator(channels: int, width: int) -> nn.Sequential:
    """Two 3x3 convs with LeakyReLU(0.2), global average pooling, a linear -> one logit."""
    return nn.Sequential(
        nn.Conv2d(channels, width, kernel_size=3, padding=1),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Conv2d(width, width, kernel_size=3, padding=1),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 1),
    )


@contextmanager
def trainable(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with ``requires_grad`` on inside the block and off again after it."""
    module.requires_grad_(True)
    try:
        yield module
    finally:
        module.requires_grad_(False)


@register_method("kdfm")
class KDFM(DistillMethod):
    """Feature-map distillation with a shared classifier and a GAN on feature maps.

    With ``f_s`` the student's deepest stage output, ``A`` the adapter (1x1 conv + BN to
    the teacher's channels, resized to its size), ``f_t`` the teacher's final feature map
    (before its last ReLU, so that the BN-ended ``A(f_s)`` lives in the same signed space;
    the head then starts with that ReLU), ``h_t`` the teacher's frozen head after ``f_t``
    and ``D`` the discriminator:

    * ``loss_ce = ce_weight * CE(z_s, y)`` (the student's own head, the exported one);
    * ``loss_shared = shared_weight * T^2 * KL(softmax(z_t / T) || softmax(h_t(A(f_s)) / T))``:
      the shared classifier, Hinton KD against the teacher's logits (chosen over CE on the
      labels: the teacher's fixed head then asks ``A(f_s)`` for the teacher's whole output);
    * ``loss_feature = feature_weight * MSE(A(f_s), f_t)`` (element mean);
    * ``loss_adversarial = adversarial_weight * mean(-log sigmoid(D(A(f_s))))``
      (non-saturating: the student wants its maps taken for real).

    After every trainer step ``D`` takes one Adam step (``disc_lr``, betas ``disc_beta1``,
    ``disc_beta2``: the DCGAN values) on ``-log sigmoid(D(f_t)) - log(1 - sigmoid(D(A(f_s))))``
    with both maps of that step detached. ``D`` is two 3x3 convs of ``disc_channels``
    channels with LeakyReLU(0.2), global pooling and a linear. The adapter is trained by the
    trainer (:meth:`extra_parameters`); ``D`` only by its own optimiser, whose state is in
    ``state_dict()``. Neither is part of the exported student.
    """

    needs_input_size: ClassVar[bool] = True

    @dataclass
    class Options:
        ce_weight: float = 1.0
        shared_weight: float = 1.0
        temperature: float = 4.0
        feature_weight: float = 1.0
        adversarial_weight: float = 0.1
        disc_channels: int = 64
        disc_lr: float = 2e-4
        disc_beta1: float = 0.5
        disc_beta2: float = 0.999

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 input_size: tuple[int, int, int] | None = None, **options: Any):
        super().__init__(student, teacher, input_size=input_size, **options)
        student_tap = stage_taps(student, input_size)[-1]
        teacher_tap = stage_taps(self.teacher, input_size, preact=True)[-1]
        # Views sharing the networks' modules, kept out of the state_dict (no duplicate keys).
        self._views = {"student": WithFeatures(student, [student_tap]),
                       "teacher": WithFeatures(self.teacher, [teacher_tap]),
                       "teacher_head": head_after(self.teacher, teacher_tap)}
        channels, size = teacher_tap.shape[0], tuple(teacher_tap.shape[1:])
        self.adapter = Adapter(student_tap.shape[0], channels, size)
        self.discriminator = feature_discriminator(channels, self.options["disc_channels"])
        self.discriminator.requires_grad_(False)  # on only inside its own step
        self.discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.options["disc_lr"],
            betas=(self.options["disc_beta1"], self.options["disc_beta2"]))
        self._pending_maps: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_discriminator_loss: torch.Tensor | None = None

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, (student_map,) = self._views["student"](images)
        with torch.no_grad():
            teacher_logits, (teacher_map,) = self._views["teacher"](images)
        adapted = self.adapter(student_map)
        shared_logits = self._views["teacher_head"](adapted)
        self._pending_maps = (teacher_map.detach().float(), adapted.detach().float())
        options = self.options
        shared = kd_loss(shared_logits, teacher_logits, options["temperature"])
        return logits, {
            "loss_ce": options["ce_weight"] * cross_entropy(logits, labels),
            "loss_shared": options["shared_weight"] * shared,
            "loss_feature": options["feature_weight"] * F.mse_loss(
                adapted.float(), teacher_map.float()),
            "loss_adversarial": options["adversarial_weight"] * generator_loss(
                self.discriminator(adapted)),
        }

    def after_backward_step(self, step: int) -> None:
        """One Adam step of the discriminator on the maps of the step just taken."""
        if self._pending_maps is None:
            return
        real, fake = self._pending_maps
        self._pending_maps = None
        with trainable(self.discriminator), torch.enable_grad():
            loss = discriminator_loss(self.discriminator(real), self.discriminator(fake))
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.discriminator_optimizer.step()
        self.last_discriminator_loss = loss.detach()

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters())

    def get_extra_state(self) -> dict[str, Any]:
        return {"discriminator_optimizer": self.discriminator_optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
