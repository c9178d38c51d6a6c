"""The distillation-method contract and the ``METHODS`` registry.

A method is one small ``nn.Module`` that owns the student, the frozen teacher and anything
else its loss needs (fusion or adapter modules, a discriminator). The trainer only ever calls
:meth:`DistillMethod.forward_train` (through ``forward``, so that DistributedDataParallel
sees it), sums the returned losses and steps one optimiser over
``student.parameters()`` and :meth:`DistillMethod.extra_parameters`; it knows nothing about
any particular method. Adding a method is adding one file to :mod:`kdsearch.distill.methods`::

    @register_method("kd")
    class KD(DistillMethod):
        @dataclass
        class Options:
            temperature: float = 4.0

        def forward_train(self, images, labels, epoch):
            logits = self.student(images)
            T = self.options["temperature"]
            return logits, {"loss_kd": kd_loss(logits, self.teacher_logits(images), T)}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.registry import Registry
from kdsearch.settings import NoOptions, from_mapping

METHODS: Registry[type[DistillMethod]] = Registry("distillation method",
                                                builtins="kdsearch.distill.methods")


def register_method(name: str):
    """Class decorator: register a :class:`DistillMethod` subclass as ``name``."""
    return METHODS.register_named(name)


class DistillMethod(nn.Module):
    """Base class: ``Method(student, teacher, input_size=(C, H, W), **options)``.

    Contract for subclasses:

    * ``forward_train(images, labels, epoch) -> (student_logits [N, classes], {name: loss})``
      where every loss is a scalar tensor already multiplied by its weight; the trainer
      back-propagates their sum. ``epoch`` is 1-based (the epoch being trained).
    * ``Options``: a dataclass of the method's options, typed, with their recipe values
      (from its paper) as defaults; the constructor accepts exactly these keywords and
      stores the checked values in ``self.options`` (a dict: it goes into summaries and
      checkpoints). The class docstring states the loss formula.
    * ``needs_teacher``: ``False`` for methods that train without a teacher (``ce``).
    * ``needs_input_size``: ``True`` for methods that build modules from a dry forward pass
      (the constructor then refuses ``input_size=None``).
    * ``trains_a_chain``: ``True`` for a method whose guides are trained models of their
      own (``dgkd``'s assistants): ``kdsearch train`` trains the chain
      (:mod:`kdsearch.distill.chain`) instead of one run.
    * :meth:`run_info`: what the method changed that the run's ``summary.json`` should say
      (a recurrent student's tying); default nothing.
    * ``teacher_logits_only``: ``True`` for methods that use the teacher only through
      ``self.teacher_logits(images)`` on the very batch ``forward_train`` received (``kd``);
      they may then be trained with an exact cache of those logits
      (:mod:`kdsearch.distill.teacher_cache`, ``--cache-teacher``).
    * Trainable modules other than the student are returned by :meth:`extra_parameters`
      (the trainer's optimiser steps them; they are not exported with the student) and must
      exist once ``__init__`` returns. ``self.input_size`` is there to build them from a
      dry forward pass.
    * A method with its own optimiser steps it in :meth:`after_backward_step` and returns its
      state from ``get_extra_state`` / restores it in ``set_extra_state`` (``nn.Module``'s
      hooks), so that ``state_dict()`` covers everything an exact resume needs. Under
      torchrun such an optimiser (an attribute of the method or one of its modules) steps
      on gradients averaged over the processes (:mod:`kdsearch.distill.distributed`).

    The teacher is frozen (``requires_grad_(False)``) and stays in eval mode even when
    ``.train()`` is called on the method; use :meth:`teacher_logits` / run it under
    ``torch.no_grad()``.
    """

    Options: ClassVar[type] = NoOptions
    needs_teacher: ClassVar[bool] = True
    needs_input_size: ClassVar[bool] = False
    trains_a_chain: ClassVar[bool] = False
    teacher_logits_only: ClassVar[bool] = False  # True: may use --cache-teacher (see above)
    name: ClassVar[str] = ""  # set by @register_method (used in messages)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        input_size: tuple[int, int, int] | None = None,
        **options: Any,
    ):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise KdsearchError(f"method {self._label()} needs a teacher")
        if self.needs_input_size and input_size is None:
            raise KdsearchError(f"method {self._label()} needs input_size (C, H, W)")
        self.options = resolve_options(type(self), options)
        self.input_size = input_size
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(student logits [N, classes], {loss name: weighted scalar loss})`` for one batch."""
        raise NotImplementedError

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, epoch: int | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits (what evaluation and export use); with ``labels`` and ``epoch``,
        :meth:`forward_train` (how the trainer calls it, so that a DDP wrapper sees it)."""
        if labels is None:
            return self.student(images)
        return self.forward_train(images, labels, epoch)

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits, computed without autograd (safe to use inside a loss)."""
        with torch.no_grad():
            return self.teacher(images)

    def run_info(self) -> dict[str, Any]:
        """Entries for the run's ``summary.json`` (what the method changed); default none."""
        return {}

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters besides the student's (fusion/adapter modules); default none."""
        return []

    def after_backward_step(self, step: int) -> None:
        """Called after each optimiser step; ``step`` counts the steps so far (1-based)."""

    def train(self, mode: bool = True) -> DistillMethod:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @classmethod
    def _label(cls) -> str:
        return repr(cls.name or cls.__name__)


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with ``requires_grad`` off for every parameter."""
    return model.eval().requires_grad_(False)


def method_names() -> list[str]:
    """Registered method names, sorted (imports the built-in methods first)."""
    return METHODS.names()


def get_method(name: str) -> type[DistillMethod]:
    """The method class registered as ``name``; :class:`UnknownNameError` with close matches."""
    return METHODS.get(name)


def build_method(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None,
    options: Mapping[str, Any] | None = None,
    input_size: tuple[int, int, int] | None = None,
) -> DistillMethod:
    """``get_method(name)(student, teacher, input_size=input_size, **options)``."""
    return get_method(name)(student, teacher, input_size=input_size, **dict(options or {}))


def resolve_options(method_class: type[DistillMethod], given: Mapping[str, Any]) -> dict:
    """``method_class.Options`` with ``given`` set, as a dict; strings (from the command
    line) are read as the option's type.

    Raises :class:`KdsearchError` for an option the method does not have (naming those it
    has) or a value of the wrong type.
    """
    label = method_class._label()
    if given and not dataclasses.fields(method_class.Options):
        raise KdsearchError(f"method {label} takes no options")
    options = from_mapping(method_class.Options, dict(given), f"method {label}",
                           parse_strings=True, kind="option")
    return dataclasses.asdict(options)
