"""KDFM: GAN losses by hand, the frozen shared classifier, the discriminator's own optimiser
(steps, state round trip, exact resume), zoo and searched students, one epoch."""

from __future__ import annotations

import io
import math
import os
import signal

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_state, searched_digits_student

from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, TrainingInterrupted, build_method, get_method, train
from kdsearch.distill.methods.kdfm import discriminator_loss, generator_loss, resize_to
from kdsearch.student.resolve import resolve_model

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
LOSSES = {"loss_ce", "loss_shared", "loss_feature", "loss_adversarial"}


def model(name: str, input_size=DIGITS) -> nn.Module:
    return resolve_model(name, 10, input_size).model


def kdfm(student="digits_resnet8", teacher="digits_resnet14", input_size=DIGITS, seed=0):
    torch.manual_seed(seed)
    student = model(student, input_size) if isinstance(student, str) else student
    return build_method("kdfm", student, model(teacher, input_size), {}, input_size).train()


def images(input_size=DIGITS, batch=4, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *input_size, generator=generator),
            torch.randint(0, 10, (batch,), generator=generator))


def discriminator_state(method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.discriminator.state_dict().items()}


# -- pure functions ----------------------------------------------------------------------------
def test_gan_losses_by_hand():
    # D logit 0: sigmoid 1/2 -> -log(1/2) = ln 2 per term. D(real) = ln 3: -log(3/4) = ln(4/3).
    zero = torch.zeros(3, 1)
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    real = torch.full((2, 1), math.log(3))
    expected = math.log(4 / 3) + math.log(2)
    assert discriminator_loss(real, torch.zeros(2, 1)).item() == pytest.approx(expected)


def test_resize_pools_when_shrinking_and_repeats_when_growing():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_to(x, (4, 4)) is x
    assert resize_to(x, (1, 1)).item() == 7.5
    grown = resize_to(torch.tensor([[[[1.0, 2.0]]]]), (2, 4))
    assert grown.tolist() == [[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]]]


# -- one step ----------------------------------------------------------------------------------
def check_step(method, input_size, batch=4):
    """Finite losses; every student and adapter parameter gets a gradient, the teacher and
    the discriminator none (the trainer's optimiser must not see them)."""
    x, y = images(input_size, batch)
    logits, losses = method.forward_train(x, y, epoch=1)
    assert logits.shape == (batch, 10) and set(losses) == LOSSES
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    for name, parameter in method.student.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    for name, parameter in method.adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.discriminator.parameters())


@pytest.mark.parametrize("student, teacher, input_size", [
    ("resnet8", "resnet20", CIFAR),
    ("digits_resnet8", "digits_resnet14", DIGITS),
])
def test_zoo_pairs(student, teacher, input_size):
    method = kdfm(student, teacher, input_size)
    check_step(method, input_size, batch=2 if input_size == CIFAR else 4)


def test_searched_digits_student():
    method = kdfm(searched_digits_student())
    assert method.adapter.conv.in_channels == 22 and method.adapter.conv.out_channels == 64
    check_step(method, DIGITS)


def test_adapter_and_not_discriminator_is_trained_by_the_trainer():
    method = kdfm()
    extra = {id(p) for p in method.extra_parameters()}
    assert extra == {id(p) for p in method.adapter.parameters()}
    assert not extra & {id(p) for p in method.discriminator.parameters()}
    assert not extra & {id(p) for p in method.student.parameters()}


def test_shared_classifier_is_the_teacher_head_after_its_final_map():
    method = kdfm().eval()
    x, _ = images()
    with torch.no_grad():
        teacher_logits, (teacher_map,) = method._views["teacher"](x)
        torch.testing.assert_close(method._views["teacher_head"](teacher_map), teacher_logits)
        torch.testing.assert_close(teacher_logits, method.teacher(x))
    assert teacher_map.min() < 0  # taken before the final ReLU


# -- the discriminator -------------------------------------------------------------------------
def train_steps(method, steps: int) -> None:
    """``steps`` steps as the trainer takes them (here without a student optimiser)."""
    for step in range(1, steps + 1):
        _, losses = method.forward_train(*images(seed=step), epoch=1)
        sum(losses.values()).backward()
        method.after_backward_step(step)


def test_discriminator_step_changes_only_the_discriminator():
    method = kdfm()
    before = discriminator_state(method)
    student_before = {k: v.clone() for k, v in method.student.state_dict().items()}
    train_steps(method, 1)
    after = discriminator_state(method)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    for key, value in method.student.state_dict().items():
        if "running" not in key and "num_batches" not in key:  # BN statistics move
            assert torch.equal(value, student_before[key]), key
    assert torch.isfinite(method.last_discriminator_loss)
    assert not any(p.requires_grad for p in method.discriminator.parameters())
    method.after_backward_step(2)  # no new maps: nothing to learn from, nothing changes
    assert all(torch.equal(after[k], v) for k, v in discriminator_state(method).items())


def test_discriminator_learns_to_tell_teacher_from_student_maps():
    method = kdfm()
    x, y = images(batch=8)
    losses = []
    for step in range(1, 16):
        method.forward_train(x, y, epoch=1)
        method.after_backward_step(step)
        losses.append(method.last_discriminator_loss.item())
    assert losses[-1] < losses[0]


def test_state_dict_round_trip_restores_the_discriminator_optimiser():
    method = kdfm()
    train_steps(method, 2)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)  # as a checkpoint: loadable with weights_only
    buffer.seek(0)
    copy = kdfm(seed=7)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    saved, restored = (m.discriminator_optimizer.state_dict() for m in (method, copy))
    assert saved["param_groups"] == restored["param_groups"]
    assert saved["state"].keys() == restored["state"].keys() and saved["state"]
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, restored["state"][index][key]), (index, key)
    train_steps(method, 1)  # the next step is the same step for both
    train_steps(copy, 1)
    for key, value in discriminator_state(method).items():
        assert torch.equal(value, discriminator_state(copy)[key]), key


# -- through the trainer -----------------------------------------------------------------------
def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 64, "device": "cpu", **changes})


def test_one_epoch_end_to_end_on_synthetic(tmp_path):
    dataset = load_dataset("synthetic", num_train=128, num_test=64)
    method = kdfm("resnet8", "resnet20", dataset.input_size)
    summary = train(method, dataset, config(), tmp_path, quiet=True)
    assert math.isfinite(summary["last_test_acc"])
    record = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert all(f'"{name}"' in record for name in LOSSES) and "NaN" not in record


class InterruptedKDFM(get_method("kdfm")):
    """KDFM that sends itself SIGINT at the first step of epoch 2."""

    def forward_train(self, images, labels, epoch):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().forward_train(images, labels, epoch)


def digits_kdfm(method_class):
    torch.manual_seed(0)
    return method_class(searched_digits_student(), model("digits_resnet14"), input_size=DIGITS)


def test_resume_is_bit_identical(tmp_path):
    digits = load_dataset("digits", subset=128, seed=0)  # 2 batches of 64 per epoch
    kdfm_class = get_method("kdfm")
    train(digits_kdfm(kdfm_class), digits, config(epochs=2), tmp_path / "whole", quiet=True)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        train(digits_kdfm(InterruptedKDFM), digits, config(epochs=2), cut, quiet=True)
    train(digits_kdfm(kdfm_class), digits, config(epochs=2), cut, resume=True, quiet=True)
    whole, resumed = (torch.load(path / "checkpoint.pt", weights_only=True)["method"]
                      for path in (tmp_path / "whole", cut))
    assert_same_state(whole, resumed)  # discriminator and its optimiser's state included
    assert whole["_extra_state"]["discriminator_optimizer"]["state"]

