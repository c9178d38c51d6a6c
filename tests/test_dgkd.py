"""DGKD: the densely guided loss, stochastic guide dropping, and the chain of assistants."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch
import torch.nn as nn

from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, build_method
from kdsearch.distill.chain import train_dgkd_chain
from kdsearch.distill.methods.dgkd import dgkd_loss, sample_guides
from kdsearch.errors import KdsearchError
from kdsearch.io import read_json, read_jsonl
from kdsearch.presets import load_preset
from kdsearch.student.resolve import resolve_model

DIGITS = (1, 8, 8)
# at T = 2, z_s = [0, 0] vs z_k = [2 ln 3, 0]: p_k = [3/4, 1/4], p_s = [1/2, 1/2]
KL = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
STUDENT = [[0.0, 0.0]]
GUIDE = [[2 * math.log(3), 0.0]]


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


# -- the loss ---------------------------------------------------------------------------------

def test_loss_of_identical_logits_is_zero():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert dgkd_loss(logits, [logits.clone(), logits.clone()], 5.0).abs().item() < 1e-6
    assert dgkd_loss(logits, [], 5.0).item() == 0


def test_loss_sums_the_guides_two_class_example_by_hand():
    student, guide = torch.tensor(STUDENT), torch.tensor(GUIDE)
    assert dgkd_loss(student, [guide], 2.0).item() == pytest.approx(4 * KL, rel=1e-6)
    both = dgkd_loss(student, [guide, student.clone()], 2.0)  # the second guide adds 0
    assert both.item() == pytest.approx(4 * KL, rel=1e-6)
    assert dgkd_loss(student, [guide, guide], 2.0).item() == pytest.approx(8 * KL, rel=1e-6)


def method_with(kd_weight: float, keep_prob: float = 1.0):
    return build_method("dgkd", FixedLogits(STUDENT), FixedLogits(GUIDE), {
        "temperature": 2.0, "kd_weight": kd_weight, "keep_prob": keep_prob,
        "assistants": [FixedLogits(GUIDE), FixedLogits(STUDENT)]})


def test_method_weights_ce_and_every_guide():
    _, losses = method_with(0.25).forward_train(torch.zeros(1, 1), torch.tensor([1]), epoch=1)
    assert losses["loss_ce"].item() == pytest.approx(0.75 * math.log(2))
    assert losses["loss_kd"].item() == pytest.approx(0.25 * 2 * 4 * KL, rel=1e-6)


def test_defaults_are_the_reference_ones_pure_distillation():
    method = build_method("dgkd", FixedLogits(STUDENT), FixedLogits(GUIDE))
    assert method.options == {"temperature": 5.0, "kd_weight": 1.0, "keep_prob": 0.75}
    _, losses = method.forward_train(torch.zeros(1, 1), torch.tensor([1]), epoch=1)
    assert losses["loss_ce"].item() == 0  # lambda = 1: no label term


def test_assistants_are_frozen_in_eval_mode_and_saved():
    assistant = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    method = build_method("dgkd", nn.Linear(2, 2), nn.Linear(2, 2),
                          {"assistants": [assistant]}).train()
    assert not assistant.training and not any(p.requires_grad for p in assistant.parameters())
    assert any(key.startswith("assistants.0.") for key in method.state_dict())
    assert "assistants" not in method.options  # options stay JSON (summary, checkpoint)


@pytest.mark.parametrize("options, message", [
    ({"keep_prob": 0}, "keep_prob"), ({"kd_weight": 1.5}, "kd_weight"),
    ({"assistants": "resnet20"}, "--assistants"),
])
def test_bad_options(options, message):
    with pytest.raises(KdsearchError, match=message):
        build_method("dgkd", nn.Linear(2, 2), nn.Linear(2, 2), options)


# -- stochastic DGKD --------------------------------------------------------------------------

def test_dropping_keeps_at_least_one_guide():
    torch.manual_seed(0)
    draws = [sample_guides(3, 0.1) for _ in range(500)]
    assert all(any(keep) for keep in draws)
    assert any(sum(keep) == 1 for keep in draws)


def test_each_guide_is_kept_with_frequency_p():
    torch.manual_seed(0)
    n, p, draws = 3, 0.75, 20_000
    counts = torch.tensor([sample_guides(n, p) for _ in range(draws)]).float().mean(0)
    expected = p + (1 - p) ** n / n  # a draw that drops all keeps one at random
    assert torch.allclose(counts, torch.full((n,), expected), atol=0.012)


def test_dropping_follows_torch_seed_and_keep_prob_one_draws_nothing():
    torch.manual_seed(3)
    first = [sample_guides(4, 0.5) for _ in range(20)]
    torch.manual_seed(3)
    assert [sample_guides(4, 0.5) for _ in range(20)] == first
    state = torch.get_rng_state()
    assert sample_guides(4, 1.0) == [True] * 4 and sample_guides(1, 0.5) == [True]
    assert torch.equal(torch.get_rng_state(), state)


def test_method_drops_guides_per_batch():
    method = method_with(1.0, keep_prob=0.5)  # guides: teacher, GUIDE, STUDENT (0 KL)
    torch.manual_seed(0)
    values = {round(method.forward_train(torch.zeros(1, 1), torch.tensor([1]), 1)[1]
                    ["loss_kd"].item() / (4 * KL), 4) for _ in range(60)}
    assert values == {0.0, 1.0, 2.0}  # how many of the two informative guides were kept


# -- the chain --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=128, seed=0)  # 2 batches of 64 per epoch


def chain_models(dataset):
    torch.manual_seed(0)
    teacher = resolve_model("digits_resnet14", dataset.num_classes, dataset.input_size).model
    student = resolve_model("digits_resnet8", dataset.num_classes, dataset.input_size).model
    return teacher, student


def run_chain(dataset, out, **kwargs):
    teacher, student = chain_models(dataset)
    constraints, search = load_preset("digits")
    search = dataclasses.replace(search, steps=5, device="cpu")
    config = TrainConfig(epochs=1, batch_size=64, device="cpu")
    return train_dgkd_chain(teacher, student, dataset, config, out, teacher_name="digits_resnet14",
                            search_config=search, constraints=constraints, quiet=True,
                            info={"student": "digits_resnet8"}, **kwargs)


def test_chain_searches_trains_each_link_and_skips_finished_ones(digits, tmp_path):
    out = tmp_path / "chain"
    summary = run_chain(digits, out, num_assistants=1)
    for name in ("assistant1_search/student.json", "assistant1/summary.json",
                 "student/summary.json", "summary.json", "student.pt"):
        assert (out / name).is_file(), name
    roles = [(link["role"], len(link["guides"])) for link in summary["chain"]]
    assert roles == [("assistant1", 1), ("student", 2)]  # the student learns from T and A1
    teacher_macs = read_json(out / "assistant1_search/summary.json")["teacher"]["macs"]
    assistant, student = summary["chain"]
    assert student["macs"] < assistant["macs"] < teacher_macs
    assert read_json(out / "student/summary.json")["method_options"]["keep_prob"] == 0.75
    assert read_json(out / "assistant1/summary.json")["method_options"]["keep_prob"] == 1.0

    first = (out / "student.pt").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_chain(digits, out, num_assistants=1)  # everything finished: nothing retrained
    assert again["chain"] == summary["chain"]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in stamps if p.parent != out)

    shutil.rmtree(out / "student")  # only the student is trained again, to the same weights
    run_chain(digits, out, num_assistants=1)
    assert (out / "assistant1/metrics.jsonl").stat().st_mtime_ns == stamps[
        out / "assistant1/metrics.jsonl"]
    assert len(read_jsonl(out / "student/metrics.jsonl")) == 1
    assert (out / "student.pt").read_bytes() == first


def test_chain_refuses_a_search_done_at_another_budget(digits, tmp_path):
    run_chain(digits, tmp_path, budgets=["0.6x"])
    with pytest.raises(KdsearchError, match=r"searched with other settings \(budget: "):
        run_chain(digits, tmp_path, budgets=["0.5x"])


def test_chain_budgets_must_lie_above_the_student(digits, tmp_path):
    with pytest.raises(KdsearchError, match="above the student"):
        run_chain(digits, tmp_path, budgets=["0.1x"])


def test_chain_with_given_assistants_and_the_cli(digits, tmp_path):
    out = tmp_path / "cli"
    code = main(["train", "--method", "dgkd", "--assistants", "digits_resnet8_half",
                 "--student", "digits_resnet8", "--teacher", "digits_resnet14",
                 "--dataset", "digits", "--subset", "64", "--epochs", "1", "--device", "cpu",
                 "--option", "temperature=4", "--quiet", "--out", str(out)])
    assert code == 0
    chain = read_json(out / "summary.json")["chain"]
    assert [link["model"] for link in chain] == ["digits_resnet8_half", "digits_resnet8"]
    assert chain[1]["guides"] == ["digits_resnet14", "digits_resnet8_half"]
    assert read_json(out / "student/summary.json")["method_options"]["temperature"] == 4.0


def test_cli_rejects_assistant_options_for_other_methods(tmp_path):
    assert main(["train", "--method", "kd", "--assistants", "none", "--student",
                 "digits_resnet8", "--teacher", "digits_resnet14", "--dataset", "digits",
                 "--out", str(tmp_path / "x")]) == 2
