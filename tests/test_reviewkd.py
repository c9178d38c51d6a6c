"""ReviewKD: HCL by hand, stage pairing, ABF shapes, zoo and searched students, one epoch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from helpers import searched_digits_student

from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, build_method, train
from kdsearch.distill.methods.reviewkd import AttentionFusion, hcl_loss, pair_from_deepest
from kdsearch.graph.taps import Tap
from kdsearch.student.resolve import resolve_model

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)


def model(name: str, input_size=DIGITS) -> nn.Module:
    return resolve_model(name, 10, input_size).model


class TwoStageNet(nn.Module):
    """A plain CNN with two stages (8x8, 4x4): fewer stages than digits_resnet14 has."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.stage2(self.stage1(x)).mean(dim=(2, 3)))


def images(input_size=DIGITS, batch=4, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *input_size, generator=generator),
            torch.randint(0, 10, (batch,), generator=generator))


# -- HCL by hand -------------------------------------------------------------------------------
def test_hcl_of_a_4x4_map_by_hand():
    # ft = 0..15 in a 4x4 map, fs = 0. Full MSE: sum k^2 / 16 = 1240 / 16 = 77.5.
    # 4x4 pooling is not smaller than the map: skipped. 2x2 means 2.5, 4.5, 10.5, 12.5:
    # MSE (6.25 + 20.25 + 110.25 + 156.25) / 4 = 73.25, weight 1/2. 1x1 mean 7.5: 56.25,
    # weight 1/4. (77.5 + 73.25 / 2 + 56.25 / 4) / (1 + 1/2 + 1/4).
    teacher = torch.arange(16.0).reshape(1, 1, 4, 4)
    expected = (77.5 + 73.25 / 2 + 56.25 / 4) / 1.75
    assert hcl_loss([torch.zeros(1, 1, 4, 4)], [teacher]).item() == pytest.approx(expected)


def test_hcl_of_an_8x8_checkerboard_uses_all_three_pooled_levels():
    # A +-1 checkerboard against 0: full MSE 1; every pooled map averages to 0 (MSE 0).
    # Weights 1, 1/2, 1/4, 1/8 -> 1 / 1.875.
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = (((rows + cols) % 2) * 2 - 1).float().reshape(1, 1, 8, 8)
    assert hcl_loss([torch.zeros(1, 1, 8, 8)], [board]).item() == pytest.approx(1 / 1.875)


def test_hcl_of_2x2_and_1x1_maps_summed_over_levels():
    # 2x2 map [[1, 3], [5, 7]] against 0: MSE 84 / 4 = 21; only 1x1 pooling (mean 4,
    # MSE 16) with weight 1/2: (21 + 8) / 1.5. A 1x1 map: plain MSE, (2 - 0)^2 = 4.
    two = torch.tensor([1.0, 3.0, 5.0, 7.0]).reshape(1, 1, 2, 2)
    one = torch.full((1, 1, 1, 1), 2.0)
    loss = hcl_loss([torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)], [two, one])
    assert loss.item() == pytest.approx(29 / 1.5 + 4)


def test_hcl_is_zero_for_equal_features():
    features = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 1, 1)]
    assert hcl_loss(features, [f.clone() for f in features]).item() == 0.0


# -- pairing and fusion ------------------------------------------------------------------------
def test_stages_are_paired_from_the_deepest_backwards():
    student = [Tap("s1", (8, 8, 8)), Tap("s2", (16, 4, 4))]
    teacher = [Tap("t1", (16, 8, 8)), Tap("t2", (32, 4, 4)), Tap("t3", (64, 2, 2))]
    paired_student, paired_teacher = pair_from_deepest(student, teacher)
    assert [t.node for t in paired_student] == ["s1", "s2"]
    assert [t.node for t in paired_teacher] == ["t2", "t3"]
    paired_teacher, paired_student = pair_from_deepest(teacher, student)
    assert [t.node for t in paired_teacher] == ["t2", "t3"]


def test_fusion_gates_the_deeper_map_and_resizes_to_the_teacher():
    torch.manual_seed(0)
    fusion = AttentionFusion(in_channels=6, mid_channels=4, out_channels=10, fuse=True)
    output, passed_on = fusion(torch.randn(2, 6, 8, 8), torch.randn(2, 4, 4, 4), (4, 4))
    assert output.shape == (2, 10, 4, 4) and passed_on.shape == (2, 4, 4, 4)
    deepest = AttentionFusion(in_channels=6, mid_channels=4, out_channels=10, fuse=False)
    assert deepest.attention is None
    output, _ = deepest(torch.randn(2, 6, 1, 1), None, (1, 1))
    assert output.shape == (2, 10, 1, 1)


def test_fusion_with_a_closed_gate_keeps_only_the_student_map():
    # Attention bias -inf on channel 1 (y's gate) and +inf on channel 0: x = x * 1 + y * 0.
    torch.manual_seed(0)
    fusion = AttentionFusion(in_channels=3, mid_channels=2, out_channels=2, fuse=True).eval()
    with torch.no_grad():
        fusion.attention.weight.zero_()
        fusion.attention.bias.copy_(torch.tensor([50.0, -50.0]))
    feature = torch.randn(1, 3, 4, 4)
    _, fused = fusion(feature, torch.randn(1, 2, 2, 2), (4, 4))
    torch.testing.assert_close(fused, fusion.reduce(feature))


# -- the method --------------------------------------------------------------------------------
def check_step(method, input_size, batch=4):
    """One forward_train: finite losses; student and fusion parameters get gradients, the
    teacher none; fused levels match the teacher's feature shapes."""
    x, y = images(input_size, batch)
    logits, losses = method.train().forward_train(x, y, epoch=20)
    assert logits.shape == (batch, 10)
    assert set(losses) == {"loss_ce", "loss_review"}
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    for name, parameter in method.student.named_parameters():
        assert parameter.grad is not None, name
    assert all(p.grad is not None for p in method.extra_parameters())
    assert all(p.grad is None for p in method.teacher.parameters())


def teacher_shapes(method, input_size):
    with torch.no_grad():
        _, maps = method._views["teacher"](images(input_size)[0])
    return [tuple(m.shape[1:]) for m in maps[:-1]] + [(maps[-1].shape[1], 1, 1)]


def fused_shapes(method, input_size):
    with torch.no_grad():
        _, maps = method._views["student"](images(input_size)[0])
        fused = method.fuse([*maps, maps[-1].mean(dim=(2, 3), keepdim=True)])
    return [tuple(f.shape[1:]) for f in fused]


@pytest.mark.parametrize("student, teacher, input_size", [
    ("resnet8", "resnet20", CIFAR),
    ("digits_resnet8", "digits_resnet14", DIGITS),
])
def test_zoo_pairs(student, teacher, input_size):
    torch.manual_seed(0)
    method = build_method("reviewkd", model(student, input_size), model(teacher, input_size),
                          {}, input_size)
    assert len(method.fusions) == 4  # three stages and the pooled feature
    assert fused_shapes(method, input_size) == teacher_shapes(method, input_size)
    check_step(method, input_size, batch=2 if input_size == CIFAR else 4)


def test_searched_digits_student():
    torch.manual_seed(0)
    student = searched_digits_student()
    method = build_method("reviewkd", student, model("digits_resnet14"), {}, DIGITS)
    assert [f.reduce[0].in_channels for f in method.fusions] == [22, 22, 11, 6]
    assert fused_shapes(method, DIGITS) == teacher_shapes(method, DIGITS)
    check_step(method, DIGITS)


def test_fewer_student_stages_pair_with_the_deepest_teacher_stages():
    torch.manual_seed(0)
    method = build_method("reviewkd", TwoStageNet(), model("digits_resnet14"), {}, DIGITS)
    # student 8x8 and 4x4 stages -> teacher 4x4 and 2x2 stages (pre-ReLU), then pooled
    assert teacher_shapes(method, DIGITS) == [(32, 4, 4), (64, 2, 2), (64, 1, 1)]
    assert fused_shapes(method, DIGITS) == teacher_shapes(method, DIGITS)
    assert method.fusions[0].reduce[0].out_channels == 16  # mid: the deepest student width
    check_step(method, DIGITS)


def test_review_loss_warms_up_linearly_over_warmup_epochs():
    torch.manual_seed(0)
    method = build_method("reviewkd", model("digits_resnet8"), model("digits_resnet14"),
                          {"review_weight": 0.6}, DIGITS).train()
    x, y = images()
    with torch.no_grad():
        review = {epoch: method.forward_train(x, y, epoch)[1]["loss_review"].item()
                  for epoch in (5, 20, 40)}
    assert review[5] == pytest.approx(review[20] / 4)
    assert review[40] == pytest.approx(review[20])
    assert method.options == {"ce_weight": 1.0, "review_weight": 0.6, "warmup_epochs": 20}


def test_fusion_modules_are_not_part_of_the_student():
    method = build_method("reviewkd", model("digits_resnet8"), model("digits_resnet14"), {},
                          DIGITS)
    student_ids = {id(p) for p in method.student.parameters()}
    assert not student_ids & {id(p) for p in method.extra_parameters()}
    assert all(key.split(".")[0] in ("student", "teacher", "fusions")
               for key in method.state_dict())


def test_one_epoch_end_to_end(tmp_path):
    dataset = load_dataset("digits", subset=128, seed=0)
    torch.manual_seed(0)
    method = build_method("reviewkd", searched_digits_student(), model("digits_resnet14"), {},
                          dataset.input_size)
    config = TrainConfig(epochs=1, batch_size=64, device="cpu")
    summary = train(method, dataset, config, tmp_path, quiet=True)
    assert math.isfinite(summary["last_test_acc"])
    record = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert '"loss_review"' in record and "NaN" not in record
