"""``recurrent``: Pintea, Liu & van Gemert, "Recurrent Knowledge Distillation" (ICIP 2018)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.distill.losses import cross_entropy
from kdsearch.distill.method import DistillMethod, register_method
from kdsearch.distill.recurrence import TYINGS, make_recurrent, tied_convs
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_params
from kdsearch.graph.taps import WithFeatures, stage_taps


def attention_map(feature: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``Q / ||Q||`` per sample, ``Q = sum_c f[c]^2`` flattened: ``[N, C, H, W] -> [N, H*W]``.

    With ``size``, ``Q`` is first average-pooled (adaptive) to ``size`` (when two paired
    maps differ in resolution, the larger is pooled to the smaller). Float32 throughout.
    """
    q = feature.float().pow(2).sum(dim=1)  # [N, H, W]
    if size is not None and tuple(q.shape[1:]) != tuple(size):
        q = F.adaptive_avg_pool2d(q.unsqueeze(1), size).squeeze(1)
    return F.normalize(q.flatten(1), dim=1)  # [N, H*W], unit L2 norm per sample


def attention_transfer_loss(fs: list[torch.Tensor], ft: list[torch.Tensor]) -> torch.Tensor:
    """``sum_pairs mean_{n,p} (Q_s/||Q_s|| - Q_t/||Q_t||)^2`` (Zagoruyko & Komodakis 2017).

    ``fs[i]`` and ``ft[i]`` are paired feature maps ``[N, C, H, W]`` (channel counts may
    differ). The mean runs over the batch and the ``H*W`` positions, as attention transfer's
    reference code and mdistiller do: per sample ``||a_s - a_t||^2 / (H W)``, averaged over
    the batch. Spatial sizes that differ are pooled to the smaller (see :func:`attention_map`).
    """
    if len(fs) != len(ft):
        raise ValueError(f"{len(fs)} student features but {len(ft)} teacher features")
    total = fs[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(fs, ft, strict=True):
        size = min(tuple(s.shape[2:]), tuple(t.shape[2:]), key=lambda hw: hw[0] * hw[1])
        total = total + (attention_map(s, size) - attention_map(t, size)).pow(2).mean()
    return total


REFERENCE_BETA, REFERENCE_AREA = 1000.0, 32 * 32  # attention transfer's weight, on CIFAR


def default_beta(input_size: tuple[int, int, int]) -> float:
    """Attention transfer's beta for inputs of ``input_size``: 1000 at 32x32 and above (the
    reference's CIFAR and ImageNet setting), ``1000 * H W / 1024`` below it, which keeps the
    weight per position of the reference's CIFAR maps."""
    return REFERENCE_BETA * min(1.0, input_size[1] * input_size[2] / REFERENCE_AREA)


def pair_stages(student_stages: int, teacher_stages: int) -> list[tuple[int, int]]:
    """Stage index pairs, aligned at the deepest stage: ``min(n_s, n_t)`` pairs."""
    count = min(student_stages, teacher_stages)
    return list(zip(range(student_stages - count, student_stages),
                    range(teacher_stages - count, teacher_stages), strict=True))


@register_method("recurrent")
class RecurrentKD(DistillMethod):
    """A recurrent student (conv weights shared across its residual blocks) taught by attention.

    ``loss_ce = CE(z_s, y)``;
    ``loss_at = beta * sum over matched stages of mean (Q_s/||Q_s|| - Q_t/||Q_t||)^2``,
    ``Q = sum_c f_c^2`` of a stage output (:func:`attention_transfer_loss`).

    At construction the method **transforms its student in place** with
    :func:`~kdsearch.distill.recurrence.make_recurrent` (``tying``: interleaved, the
    paper's choice for all later results, sequential or single); the trained (exported)
    student is that recurrent model, whose ``state_dict`` also loads into the plain one.
    Stage outputs come from :func:`~kdsearch.graph.taps.stage_taps`; stages are paired from
    the deepest down. ``self.recurrence`` records the tying, the student's params before
    and after, and the tied conv names (a student with nothing to tie triggers a warning).
    The paper does not report its loss weight. Attention transfer's reference code (and
    mdistiller's AT) use ``beta = 1000`` with this mean reduction, on CIFAR (32x32) and
    ImageNet inputs. The mean over a stage's ``H*W`` positions makes a sample's term grow as
    ``1 / (H W)``: on smaller inputs the same beta weighs attention far more (on 8x8 digits
    16x more than on CIFAR; measured there, beta 1000 drove ``loss_ce`` from 3.5 to 16.5 in
    epoch 2 and the student to 57.5 % after 10 epochs, beta 62.5 to 97.8 %). So the default
    (``beta`` unset) is :func:`default_beta`: 1000 at 32x32 inputs and above, scaled by the
    input area below; an explicit ``--option beta=...`` is used as given.
    """

    needs_input_size: ClassVar[bool] = True

    @dataclass
    class Options:
        tying: str = "interleaved"  # interleaved, sequential or single
        beta: float | None = None  # None: default_beta(input size)

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 input_size: tuple[int, int, int] | None = None, **options: Any):
        super().__init__(student, teacher, input_size=input_size, **options)
        if self.options["tying"] not in TYINGS:
            raise KdsearchError(f"option tying of method 'recurrent' is one of "
                                f"{', '.join(TYINGS)}, not {self.options['tying']!r}")
        self.beta = (default_beta(input_size) if self.options["beta"] is None
                     else self.options["beta"])
        params_before = count_params(self.student)
        make_recurrent(self.student, input_size, self.options["tying"])
        self.recurrence = {"tying": self.options["tying"], "params_before": params_before,
                           "params_after": count_params(self.student),
                           "tied": tied_convs(self.student)}
        if not self.recurrence["tied"]:
            warnings.warn(f"recurrent: {type(student).__name__} has no residual blocks of "
                          f"equal shape to tie with tying={self.options['tying']!r}; the "
                          "student is unchanged (attention transfer still applies)",
                          stacklevel=2)
        student_taps = stage_taps(self.student, input_size)
        teacher_taps = stage_taps(self.teacher, input_size)
        pairs = pair_stages(len(student_taps), len(teacher_taps))
        # views that share the networks' modules, kept out of the module tree so that the
        # state_dict holds each weight once (their modes follow the shared modules)
        self._views = {
            "student": WithFeatures(self.student, [student_taps[s] for s, _ in pairs]),
            "teacher": WithFeatures(self.teacher, [teacher_taps[t] for _, t in pairs])}

    def run_info(self) -> dict[str, Any]:
        return {"recurrence": self.recurrence, "attention_beta": self.beta}

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, student_features = self._views["student"](images)
        with torch.no_grad():
            _, teacher_features = self._views["teacher"](images)
        at = attention_transfer_loss(student_features, teacher_features)
        return logits, {"loss_ce": cross_entropy(logits, labels),
                        "loss_at": self.beta * at}
