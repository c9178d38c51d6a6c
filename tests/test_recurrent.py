"""Recurrent students: weight tying on the graph, the attention-transfer loss, the method."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.distill import build_method
from kdsearch.distill.methods.recurrent import attention_transfer_loss, default_beta, pair_stages
from kdsearch.distill.recurrence import (
    TYINGS,
    make_recurrent,
    recurrence_report,
    tie_plan,
    tied_convs,
)
from kdsearch.errors import KdsearchError
from kdsearch.io import read_json
from kdsearch.models import build_model
from kdsearch.presets import load_preset
from kdsearch.student.resolve import resolve_model
from kdsearch.student.run import search_student

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
# conv weights of resnet20/56's stages: 16, 32 and 64 channels, 3x3
STAGE_WEIGHTS = (16 * 16 * 9, 32 * 32 * 9, 64 * 64 * 9)


def recurrent(name: str, tying: str, input_size=CIFAR) -> tuple[nn.Module, nn.Module]:
    """(plain model, the same weights made recurrent)."""
    torch.manual_seed(0)
    plain = build_model(name, num_classes=10, in_channels=input_size[0])
    return plain, make_recurrent(copy.deepcopy(plain), input_size, tying)


# -- the loss ---------------------------------------------------------------------------------

def fmap(*rows) -> torch.Tensor:
    """A [1, C, H, W] feature map from nested lists ``[channel][row][col]``."""
    return torch.tensor([rows], dtype=torch.float32)


def test_attention_loss_orthogonal_maps_by_hand():
    # Q_s = [1, 0], Q_t = [0, 1]: unit vectors 2 apart squared; mean over 2 positions = 1.
    fs = fmap([[1.0, 0.0]])
    ft = fmap([[0.0, 1.0]], [[0.0, 0.0]])
    assert attention_transfer_loss([fs], [ft]).item() == pytest.approx(1.0)


def test_attention_loss_general_case_by_hand():
    # Q_s = [9, 16] -> a_s = [9, 16] / sqrt(337); Q_t = [1 + 1, 0] -> a_t = [1, 0].
    # ||a_s - a_t||^2 = 2 - 2 a_s.a_t = 2 - 18 / sqrt(337); mean over 2 positions.
    fs = fmap([[3.0, 4.0]])
    ft = fmap([[1.0, 0.0]], [[-1.0, 0.0]])
    expected = 1 - 9 / math.sqrt(337)
    assert attention_transfer_loss([fs], [ft]).item() == pytest.approx(expected, rel=1e-6)


def test_attention_loss_ignores_channel_count_and_scale():
    f = torch.randn(2, 3, 4, 4)
    assert attention_transfer_loss([f], [torch.cat([f, -f], 1)]).item() < 1e-7
    assert attention_transfer_loss([f], [5 * f]).item() < 1e-7


def test_attention_loss_sums_pairs_and_averages_the_batch():
    same, orthogonal = (fmap([[1.0, 0.0]]), fmap([[1.0, 0.0]])), (fmap([[1.0, 0.0]]),
                                                                    fmap([[0.0, 1.0]]))
    batch_s = torch.cat([same[0], orthogonal[0]])
    batch_t = torch.cat([same[1], orthogonal[1]])
    assert attention_transfer_loss([batch_s], [batch_t]).item() == pytest.approx(0.5)
    pairs = attention_transfer_loss([orthogonal[0], orthogonal[0]], [orthogonal[1]] * 2)
    assert pairs.item() == pytest.approx(2.0)


def test_attention_loss_pools_the_larger_map():
    # Q_s = [[1, 0], [1, 0]] pooled to one row: [1, 0]; against Q_t = [0, 1] -> 1.
    fs = fmap([[1.0, 0.0], [1.0, 0.0]])
    assert attention_transfer_loss([fs], [fmap([[0.0, 1.0]])]).item() == pytest.approx(1.0)
    assert attention_transfer_loss([fmap([[0.0, 2.0]])], [fs]).item() == pytest.approx(1.0)


def test_stage_pairs_align_at_the_deepest_stage():
    assert pair_stages(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert pair_stages(2, 3) == [(0, 1), (1, 2)]
    assert pair_stages(3, 1) == [(2, 0)]


# -- tying ------------------------------------------------------------------------------------

def test_interleaved_ties_each_conv_to_the_first_blocks():
    _, model = recurrent("resnet20", "interleaved")
    for i in (1, 2):
        assert model.layer1[i].conv1.weight is model.layer1[0].conv1.weight
        assert model.layer1[i].conv2.weight is model.layer1[0].conv2.weight
        assert model.layer1[i].bn1.weight is not model.layer1[0].bn1.weight  # own BN
    assert model.layer1[0].conv1.weight is not model.layer1[0].conv2.weight
    assert model.layer2[2].conv1.weight is model.layer2[1].conv1.weight
    assert tied_convs(model.layer2[0]) == []  # the projection block changes scale: unshared
    assert model.layer2[0].conv2.weight is not model.layer2[1].conv2.weight


def test_sequential_shares_one_weight_per_half_of_the_steps():
    _, model = recurrent("resnet20", "sequential")
    first, second = model.layer1[0].conv1.weight, model.layer1[2].conv2.weight
    # 3 blocks = 6 convs: steps 1..3 use W1, steps 4..6 use W2
    assert model.layer1[0].conv2.weight is first and model.layer1[1].conv1.weight is first
    assert model.layer1[1].conv2.weight is second and model.layer1[2].conv1.weight is second
    assert first is not second


def test_single_shares_one_weight_per_stage():
    _, model = recurrent("resnet20", "single")
    convs = [m for block in model.layer3[1:] for m in (block.conv1, block.conv2)]
    assert all(conv.weight is convs[0].weight for conv in convs)
    assert model.layer3[1].bn1.weight is not model.layer3[1].bn2.weight


@pytest.mark.parametrize("name, blocks", [("resnet20", 3), ("resnet56", 9)])
@pytest.mark.parametrize("tying", TYINGS)
def test_params_shrink_by_the_shared_weights_and_macs_stay(name, blocks, tying):
    plain, model = recurrent(name, tying)
    # identity blocks per stage: n in stage 1, n - 1 after a projection block; 2 convs each
    convs = (2 * blocks, 2 * (blocks - 1), 2 * (blocks - 1))
    unique = 1 if tying == "single" else 2
    saved = sum((c - unique) * w for c, w in zip(convs, STAGE_WEIGHTS, strict=True))
    report = recurrence_report(plain, model, CIFAR)
    assert report["params_before"] - report["params_after"] == saved
    assert report["params_after"] == sum(p.numel() for p in model.parameters())
    assert report["macs_after"] == report["macs_before"]
    assert torch.isfinite(model(torch.randn(2, *CIFAR))).all()


def test_wide_resnet_16_2_has_one_identity_block_per_stage():
    plain, model = recurrent("wrn_16_2", "interleaved")
    assert tied_convs(model) == []
    plain, model = recurrent("wrn_16_2", "single")
    assert len(tied_convs(model)) == 3  # conv1 and conv2 of each stage's identity block
    report = recurrence_report(plain, model, CIFAR)
    assert report["params_saved"] == sum(w * 4 for w in STAGE_WEIGHTS)  # widths x2
    assert report["macs_after"] == report["macs_before"]


def test_tied_model_computes_what_the_plain_model_with_equal_weights_computes():
    _, model = recurrent("resnet20", "interleaved")
    plain = build_model("resnet20", num_classes=10)
    plain.load_state_dict(model.state_dict())  # every key is there: equal, untied weights
    model.eval(), plain.eval()
    images = torch.randn(2, *CIFAR)
    assert torch.allclose(model(images), plain(images), atol=1e-5)


@pytest.mark.parametrize("tying", TYINGS)
def test_gradient_of_a_shared_weight_sums_every_step(tying):
    torch.manual_seed(0)
    model = make_recurrent(build_model("digits_resnet14", num_classes=10, in_channels=1),
                           DIGITS, tying)
    plain = build_model("digits_resnet14", num_classes=10, in_channels=1)
    plain.load_state_dict(model.state_dict())
    images = torch.randn(4, *DIGITS)
    model(images).square().sum().backward()
    plain(images).square().sum().backward()
    for names in tied_convs(model):
        grads = [plain.get_submodule(name).weight.grad for name in names]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), names
        shared = model.get_submodule(names[0]).weight.grad
        assert torch.allclose(shared, torch.stack(grads).sum(0), rtol=1e-4, atol=1e-6)


def test_optimiser_sees_a_shared_weight_once_and_the_tie_survives_a_step():
    _, model = recurrent("resnet20", "interleaved")
    names = [n for n, _ in model.named_parameters()]
    assert "layer1.1.conv1.weight" not in names and "layer1.0.conv1.weight" in names
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    model(torch.randn(2, *CIFAR)).sum().backward()
    optimizer.step()
    assert model.layer1[2].conv1.weight is model.layer1[0].conv1.weight


def test_state_dict_round_trip_keeps_or_restores_the_tie():
    _, model = recurrent("resnet20", "interleaved")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert "layer1.2.conv1.weight" in state  # every name is saved
    fresh = make_recurrent(build_model("resnet20", num_classes=10), CIFAR, "interleaved")
    fresh.load_state_dict(state)  # in place: still tied
    assert fresh.layer1[2].conv1.weight is fresh.layer1[0].conv1.weight
    plain = build_model("resnet20", num_classes=10)
    plain.load_state_dict(state)  # a plain model loads it, untied ...
    make_recurrent(plain, CIFAR, "interleaved")  # ... and re-tying changes nothing
    assert plain.layer1[2].conv1.weight is plain.layer1[0].conv1.weight
    fresh.eval(), plain.eval()
    images = torch.randn(2, *CIFAR)
    assert torch.equal(fresh(images), plain(images))
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in fresh.parameters())


def test_deepcopy_keeps_the_tie():
    _, model = recurrent("resnet20", "single")
    clone = copy.deepcopy(model)
    assert clone.layer1[2].conv2.weight is clone.layer1[0].conv1.weight


def test_unknown_tying_is_an_error():
    with pytest.raises(KdsearchError, match="interleaved"):
        tie_plan(build_model("resnet20"), CIFAR, "braided")


@pytest.fixture(scope="module")
def searched_student(tmp_path_factory):
    """A student searched inside resnet20 on digits (5 steps; blocks only, so that the
    remaining blocks of a stage keep equal shapes)."""
    dataset = load_dataset("digits", subset=256, seed=0)
    torch.manual_seed(0)
    teacher = resolve_model("resnet20", 10, DIGITS).model
    constraints, config = load_preset("digits")
    config = dataclasses.replace(config, steps=5, device="cpu")
    constraints = dataclasses.replace(constraints, unit_kinds=("blocks",))
    out = tmp_path_factory.mktemp("search")
    return search_student(teacher, "resnet20", dataset, "0.7x", config, constraints, out,
                          progress=False).student


@pytest.mark.parametrize("tying", TYINGS)
def test_a_searched_student_becomes_recurrent(searched_student, tying):
    assert isinstance(searched_student, fx.GraphModule)
    model = make_recurrent(copy.deepcopy(searched_student), DIGITS, tying)
    assert tied_convs(model)
    report = recurrence_report(searched_student, model, DIGITS)
    assert report["params_after"] < report["params_before"]
    assert report["macs_after"] == report["macs_before"]
    assert torch.isfinite(model(torch.randn(2, *DIGITS))).all()


# -- the method -------------------------------------------------------------------------------

def digits_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = resolve_model("digits_resnet14", 10, DIGITS).model  # 2 identity blocks at 8x8
    teacher = resolve_model("digits_resnet14", 10, DIGITS).model
    return student, teacher


def test_method_makes_its_student_recurrent_in_place():
    student, teacher = digits_pair()
    before = sum(p.numel() for p in student.parameters())
    method = build_method("recurrent", student, teacher, {"tying": "single"}, DIGITS)
    assert method.student is student and student.layer1[1].conv2.weight is (
        student.layer1[0].conv1.weight)
    assert method.recurrence["params_before"] == before
    assert method.recurrence["params_after"] == sum(p.numel() for p in student.parameters())
    logits, losses = method.train().forward_train(torch.randn(4, *DIGITS),
                                                  torch.tensor([0, 1, 2, 3]), epoch=1)
    assert set(losses) == {"loss_ce", "loss_at"} and logits.shape == (4, 10)
    sum(losses.values()).backward()
    assert student.layer1[0].conv1.weight.grad is not None


def test_method_attention_term_is_beta_times_the_loss():
    student, teacher = digits_pair()
    method = build_method("recurrent", student, teacher, {"beta": 2.0}, DIGITS).eval()
    images = torch.randn(3, *DIGITS)
    _, losses = method.forward_train(images, torch.tensor([0, 1, 2]), epoch=1)
    _, fs = method._views["student"](images)
    _, ft = method._views["teacher"](images)
    expected = 2.0 * attention_transfer_loss(fs, ft)
    assert losses["loss_at"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_method_rejects_an_unknown_tying_and_warns_when_nothing_is_tied():
    student, teacher = digits_pair()
    with pytest.raises(KdsearchError, match="tying"):
        build_method("recurrent", student, teacher, {"tying": "braided"}, DIGITS)
    small = resolve_model("digits_resnet8", 10, DIGITS).model  # one identity block in all
    with pytest.warns(UserWarning, match="nothing|no residual"):
        build_method("recurrent", small, teacher, {}, DIGITS)


def test_cli_trains_a_recurrent_student_with_a_tying_option(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--method", "recurrent", "--option", "tying=single",
                 "--student", "digits_resnet14", "--teacher", "digits_resnet8",
                 "--dataset", "digits", "--subset", "64", "--epochs", "1", "--device", "cpu",
                 "--quiet", "--out", str(out)])
    assert code == 0
    summary = read_json(out / "summary.json")
    assert summary["method_options"] == {"tying": "single", "beta": None}
    assert summary["attention_beta"] == 62.5  # 1000 * 8 * 8 / (32 * 32): see default_beta
    assert summary["recurrence"]["params_after"] == summary["student_params"]
    assert summary["student_params"] < summary["recurrence"]["params_before"]


def test_method_state_dict_holds_each_weight_once():
    student, teacher = digits_pair()
    method = build_method("recurrent", student, teacher, {}, DIGITS)
    keys = method.state_dict().keys()
    assert all(key.startswith(("student.", "teacher.")) for key in keys)
    assert len(keys) == len(student.state_dict()) + len(teacher.state_dict())


def test_default_beta_is_the_references_at_cifar_size_and_scaled_below():
    assert default_beta((3, 32, 32)) == 1000.0 and default_beta((3, 224, 224)) == 1000.0
    assert default_beta((1, 8, 8)) == 62.5 and default_beta((3, 16, 32)) == 500.0
    student, teacher = digits_pair()
    assert build_method("recurrent", student, teacher, {}, DIGITS).beta == 62.5
    student, teacher = digits_pair()
    assert build_method("recurrent", student, teacher, {"beta": 1000}, DIGITS).beta == 1000.0


@pytest.mark.slow
def test_recurrent_defaults_train_well_on_digits(tmp_path):
    """With beta 1000 on 8x8 inputs loss_ce rose from 3.5 to 16.5 in epoch 2 and the student
    ended at 57.5 % after 10 epochs; the default must train like plain cross-entropy does."""
    teacher = tmp_path / "teacher"
    assert main(["teacher", "--model", "digits_resnet14", "--dataset", "digits", "--epochs",
                 "10", "--threads", "1", "--quiet", "--out", str(teacher)]) == 0
    out = tmp_path / "student"
    assert main(["train", "--method", "recurrent", "--student", "digits_resnet8", "--teacher",
                 "digits_resnet14", "--teacher-weights", str(teacher / "teacher.pt"),
                 "--dataset", "digits", "--epochs", "10", "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    ce = [record["loss_ce"] for record in records]
    assert all(later < earlier for earlier, later in itertools.pairwise(ce[:4]))
    assert records[-1]["test_acc"] > 90
