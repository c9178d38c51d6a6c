"""Turn what a user typed into a model: zoo name, torchvision:NAME, FILE.py:NAME, student.json."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line
from kdsearch.models.pretrained import is_published
from kdsearch.models.registry import MODELS, TORCHVISION_PREFIX, build_model, model_names
from kdsearch.models.user import is_user_model


def family_of(text: str) -> str:
    """The model family (it chooses the search preset) of what a user typed: a student.json
    belongs to the family of the teacher it was cut from; a name nobody knows is "generic"."""
    from kdsearch.models.registry import model_family

    root = root_model(text)
    try:
        return model_family(root)
    except KdsearchError:
        return "generic"


def root_model(text: str) -> str:
    """The model (a name) that a student.json was cut from, through any chain of cuts (a
    student searched inside a searched student); ``text`` itself when it is a name."""
    if not text.endswith(".json"):
        return text
    from kdsearch.io import read_json

    try:
        return root_model(read_json(text)["teacher"]["model"])
    except (KeyError, TypeError):
        raise KdsearchError(f"{text}: not a student.json of kdsearch search "
                            "(no teacher.model)") from None


@dataclass
class ResolvedModel:
    model: nn.Module
    num_classes: int
    input_size: tuple[int, int, int]


def natural_shape(name: str) -> tuple[int | None, tuple[int, int, int]]:
    """(num_classes, input_size) a registered model is designed for.

    A user's model (``FILE.py:NAME``) keeps the head its factory builds (``None``) and is
    assumed to take CIFAR-sized input unless told otherwise.
    """
    if is_user_model(name):
        return None, (3, 32, 32)
    if name.startswith(TORCHVISION_PREFIX):
        return 1000, (3, 224, 224)
    model_names()  # imports the zoo
    meta = MODELS.meta(name)
    default_classes = 10 if meta.get("family") == "digits" else 100
    return meta.get("num_classes", default_classes), tuple(meta.get("input_size", (3, 32, 32)))


def resolve_model(
    text: str,
    num_classes: int | None = None,
    input_size: tuple[int, int, int] | None = None,
    weights: str | None = None,
) -> ResolvedModel:
    """Build the model ``text`` names; a ``.json`` path is a student spec (its own shape).

    ``weights``: a checkpoint file, or ``torchvision`` / ``DEFAULT`` for torchvision's
    published weights of a ``torchvision:NAME`` model (:mod:`kdsearch.models.pretrained`).
    """
    if text.endswith(".json"):
        from kdsearch.student.spec import load_student

        student = load_student(Path(text), weights=weights)
        return ResolvedModel(student.model, student.num_classes, student.input_size)
    default_classes, default_size = natural_shape(text)
    num_classes = num_classes or default_classes
    input_size = input_size or default_size
    if is_published(weights):
        return ResolvedModel(_published(text, num_classes, input_size), num_classes, input_size)
    model = build_model(text, num_classes=num_classes, in_channels=input_size[0])
    if weights:
        from kdsearch.models.checkpoint import load_weights

        load_weights(model, weights, f"{text} for {num_classes} classes at {input_size}")
    if is_user_model(text):  # its factory may ignore num_classes: trust its output
        built = _classes_out(model, input_size)
        if num_classes not in (None, built):
            raise KdsearchError(f"{text} outputs {built} classes, not {num_classes}; let it "
                                "take a num_classes argument")
        num_classes = built
    return ResolvedModel(model, num_classes, input_size)


def model_for_dataset(text: str, weights: str | None, dataset, role: str) -> nn.Module:
    """Resolve ``text`` for ``dataset``'s classes and input size; a model made for another
    shape (a student.json's teacher's) is a :class:`KdsearchError` naming both (``role``,
    e.g. "student", names the model in it)."""
    resolved = resolve_model(text, dataset.num_classes, dataset.input_size, weights)
    shape = (resolved.num_classes, tuple(resolved.input_size))
    if shape != (dataset.num_classes, dataset.input_size):
        raise KdsearchError(
            f"{role} {text} is for {shape[0]} classes at {shape[1]}, but {dataset.name} has "
            f"{dataset.num_classes} classes at {dataset.input_size}"
        )
    return resolved.model


def _published(text: str, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    """``torchvision:NAME`` with torchvision's published weights (``--teacher-weights
    torchvision``), which must classify ``num_classes`` classes of 3-channel images."""
    from kdsearch.models.pretrained import check_published_fits, published_model

    check_published_fits(text, num_classes)
    return published_model(text, input_size[0])


def _classes_out(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """The width of ``model``'s output on one input (a user model's own head)."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_size))
    except Exception as err:
        raise KdsearchError(f"cannot run {type(model).__name__} on an input of shape "
                            f"{[1, *input_size]}: {type(err).__name__}: {first_line(err)}") from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise KdsearchError(f"{type(model).__name__} must return logits [batch, classes], "
                            f"got {getattr(out, 'shape', type(out).__name__)}")
    return out.shape[1]


def warn_untrained(name: str, weights: str | None, text: str) -> None:
    """``kdsearch: warning: TEXT`` on stderr when the model ``name`` gets no weights (so it
    has random ones). Silent for a user's own model (``FILE.py:NAME``,
    ``package.module:NAME``), whose factory may load its own weights."""
    if weights or is_user_model(name):
        return
    print(f"kdsearch: warning: {text}", file=sys.stderr, flush=True)


def warn_untrained_teacher(name: str, weights: str | None) -> None:
    """:func:`warn_untrained` for a teacher: a random teacher makes the search and the
    distillation meaningless."""
    warn_untrained(name, weights, f"no --teacher-weights: the teacher {name} has random "
                   "weights, so what it teaches is meaningless (pass --teacher-weights PATH, "
                   "e.g. the teacher.pt of kdsearch teacher)")
