"""Every registered distillation method honours the contract; loss maths against hand values."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from kdsearch.distill import build_method, cross_entropy, get_method, kd_loss, method_names
from kdsearch.errors import KdsearchError, UnknownNameError
from kdsearch.student.resolve import resolve_model

INPUT_SIZE = (1, 8, 8)
CLASSES = 10
BATCH = 4


def tiny_models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A digits student and a deeper digits teacher (the shapes feature methods meet)."""
    torch.manual_seed(seed)
    student = resolve_model("digits_resnet8", CLASSES, INPUT_SIZE).model
    teacher = resolve_model("digits_resnet14", CLASSES, INPUT_SIZE).model
    return student, teacher


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, *INPUT_SIZE, generator=generator)
    return images, torch.randint(0, CLASSES, (BATCH,), generator=generator)


@pytest.fixture(params=method_names())
def method(request):
    student, teacher = tiny_models()
    return build_method(request.param, student, teacher, {}, INPUT_SIZE).train()


def test_forward_train_returns_logits_and_finite_scalar_losses(method):
    logits, losses = method.forward_train(*batch(), epoch=1)
    assert logits.shape == (BATCH, CLASSES)
    assert losses and all(name.startswith("loss") for name in losses)
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name


def test_every_trainable_parameter_gets_a_gradient(method):
    _, losses = method.forward_train(*batch(), epoch=1)
    sum(losses.values()).backward()
    trainable = [*method.student.named_parameters(),
                 *((f"extra{i}", p) for i, p in enumerate(method.extra_parameters()))]
    for name, parameter in trainable:
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name} gets no gradient"
            assert torch.isfinite(parameter.grad).all(), name
    if method.teacher is not None:
        assert all(p.grad is None for p in method.teacher.parameters())


def test_teacher_is_frozen_and_stays_in_eval_mode(method):
    method.train()
    assert method.student.training
    if method.teacher is not None:
        assert not method.teacher.training
        assert not any(p.requires_grad for p in method.teacher.parameters())


def test_eval_forward_returns_student_logits(method):
    images, _ = batch()
    method.eval()
    with torch.no_grad():
        logits = method(images)
        assert logits.shape == (BATCH, CLASSES)
        assert torch.equal(logits, method.student(images))


def test_state_dict_restores_the_method_exactly(method):
    method.forward_train(*batch(), epoch=1)  # BN statistics move
    student, teacher = tiny_models(seed=5)
    copy = build_method(method.name, student, teacher, {}, INPUT_SIZE)
    copy.load_state_dict(method.state_dict())
    method.eval(), copy.eval()
    images, _ = batch(seed=2)
    with torch.no_grad():
        assert torch.equal(method(images), copy(images))


def test_method_documents_its_loss_and_options(method):
    assert type(method).__doc__ and "loss" in type(method).__doc__.lower()
    assert set(method.options) == {f.name for f in dataclasses.fields(type(method).Options)}


def test_kd_loss_is_zero_for_identical_logits():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert kd_loss(logits, logits.clone(), temperature=4.0).abs().item() < 1e-6


def test_kd_loss_matches_a_two_class_example_by_hand():
    # Sample 1 at T=2: teacher z/T = [ln 3, 0] -> p_t = [3/4, 1/4]; student p_s = [1/2, 1/2].
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2); times T^2 = 4. Sample 2 is identical (KL 0): batchmean /2.
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[2 * math.log(3), 0.0], [1.0, 2.0]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expected = 4 * kl / 2
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_gradient_is_t_times_probability_gap():
    # d/dz_s [T^2 KL(p_t || p_s)] = T (p_s - p_t) / N for one sample (N = 1).
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[2 * math.log(3), 0.0]])
    kd_loss(student, teacher, temperature=2.0).backward()
    expected = 2.0 * torch.tensor([[0.5 - 0.75, 0.5 - 0.25]])
    assert torch.allclose(student.grad, expected, atol=1e-6)


def test_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    expected = (math.log(2) + math.log(4 / 3)) / 2  # -ln(1/2), -ln(3/4)
    assert cross_entropy(logits, torch.tensor([0, 0])).item() == pytest.approx(expected)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_kd_method_weights_ce_and_kd_terms():
    student_logits = torch.tensor([[0.0, 0.0]])
    teacher_logits = torch.tensor([[4 * math.log(3), 0.0]])
    method = build_method("kd", FixedLogits(student_logits), FixedLogits(teacher_logits))
    _, losses = method.forward_train(torch.zeros(1, 1), torch.tensor([1]), epoch=1)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # at T = 4, as above
    assert losses["loss_ce"].item() == pytest.approx(0.1 * math.log(2))
    assert losses["loss_kd"].item() == pytest.approx(0.9 * 16 * kl, rel=1e-6)


def test_unknown_method_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean: kd"):
        get_method("kdd")


def test_options_are_checked_and_coerced_from_text():
    student, teacher = tiny_models()
    method = build_method("kd", student, teacher, {"temperature": "2", "ce_weight": 1})
    assert method.options["temperature"] == 2.0 and isinstance(method.options["ce_weight"], float)
    with pytest.raises(KdsearchError, match=r"unknown option 'temprature' \(allowed: ce_weight"):
        build_method("kd", student, teacher, {"temprature": 2})
    with pytest.raises(KdsearchError, match="temperature: expected a number, got 'hot'"):
        build_method("kd", student, teacher, {"temperature": "hot"})
    with pytest.raises(KdsearchError, match="takes no options"):
        build_method("ce", student, None, {"temperature": 2})


def test_teacher_is_required_only_where_the_method_uses_one():
    student, _ = tiny_models()
    build_method("ce", student, None)
    with pytest.raises(KdsearchError, match="needs a teacher"):
        build_method("kd", student, None)
