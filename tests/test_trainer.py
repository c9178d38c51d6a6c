"""The trainer: files it writes, exact resume, signals, divergence, stages files, commands."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, kill_and_resume, run_to_the_end

from kdsearch.data import load_dataset
from kdsearch.distill import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    get_method,
    load_stages,
    run_stages,
    train,
)
from kdsearch.errors import KdsearchError
from kdsearch.io import read_jsonl
from kdsearch.student.resolve import resolve_model

TIME_KEYS = {"epoch_time_s", "train_time_s", "images_per_s"}
RECORD_KEYS = {"epoch", "loss", "loss_ce", "loss_kd", "lr", "train_acc", "test_acc",
               "test_images", "test_subset"} | TIME_KEYS
SUMMARY_KEYS = {"method", "method_options", "dataset", "best_test_acc", "best_epoch",
                "last_test_acc", "epochs", "total_time_s", "images_per_s", "student_params",
                "student_macs", "config", "lr_milestone_epochs", "weights", "numerics",
                "threads"}
CHECKPOINT_KEYS = {"format", "epoch", "method_name", "method_options", "method", "optimizer",
                   "config", "numerics"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=192, seed=0)  # 3 batches of 64 per epoch


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "device": "cpu", **changes})


def kd_method(dataset, method_class=None):
    """A KD method on two tiny digits models, initialised the same way every time."""
    torch.manual_seed(0)
    student = resolve_model("digits_resnet8", dataset.num_classes, dataset.input_size).model
    teacher = resolve_model("digits_resnet8_half", dataset.num_classes, dataset.input_size).model
    method_class = method_class or get_method("kd")
    return method_class(student, teacher, input_size=dataset.input_size)


def scores(out: Path) -> list[dict]:
    """metrics.jsonl without the timing columns (which differ between runs)."""
    records = read_jsonl(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = torch.load(path_a, weights_only=True), torch.load(path_b, weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_epochs_write_the_documented_files(tmp_path, digits):
    summary = train(kd_method(digits), digits, config(), tmp_path, quiet=True)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert set(summary) >= SUMMARY_KEYS
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    assert summary["last_test_acc"] == records[-1]["test_acc"]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == CHECKPOINT_KEYS and checkpoint["epoch"] == 2
    student = resolve_model("digits_resnet8", digits.num_classes, digits.input_size).model
    student.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True))


class AdapterKD(get_method("kd")):
    """KD plus what later methods have: a trainable adapter (``extra_parameters``) and a
    critic with its own optimiser, stepped in ``after_backward_step`` and saved through
    ``get_extra_state``."""

    def __init__(self, student, teacher, **options):
        super().__init__(student, teacher, **options)
        self.adapter = torch.nn.Linear(10, 10)
        self.critic = torch.nn.Linear(10, 1)
        self.critic_optimizer = torch.optim.SGD(self.critic.parameters(), lr=0.01, momentum=0.9)
        self.critic_input = None

    def extra_parameters(self):
        return list(self.adapter.parameters())

    def forward_train(self, images, labels, epoch):
        logits, losses = super().forward_train(images, labels, epoch)
        adapted = self.adapter(logits)
        losses["loss_adapter"] = (adapted - self.teacher_logits(images)).pow(2).mean() / 100
        self.critic_input = adapted.detach()
        return logits, losses

    def after_backward_step(self, step):
        self.critic_optimizer.zero_grad()
        self.critic(self.critic_input).pow(2).mean().backward()
        self.critic_optimizer.step()

    def get_extra_state(self):
        return {"critic_optimizer": self.critic_optimizer.state_dict()}

    def set_extra_state(self, state):
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])


def interrupted_at_epoch_2(method_class):
    """``method_class`` that sends itself SIGINT at the first step of epoch 2."""

    class Interrupted(method_class):
        def forward_train(self, images, labels, epoch):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return super().forward_train(images, labels, epoch)

    return Interrupted


@pytest.mark.parametrize("method_class", [get_method("kd"), AdapterKD])
def test_resume_after_interrupt_is_bit_identical(tmp_path, digits, method_class):
    train(kd_method(digits, method_class), digits, config(), tmp_path / "whole", quiet=True)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted, match="holds epoch 1"):
        # checkpoint_every=2: epoch 1 reaches the disk only through the interrupt
        train(kd_method(digits, interrupted_at_epoch_2(method_class)), digits,
              config(checkpoint_every=2), cut, quiet=True)
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (cut / "summary.json").exists()
    train(kd_method(digits, method_class), digits, config(checkpoint_every=2), cut,
          resume=True, quiet=True)
    assert_same_weights(tmp_path / "whole" / "student.pt", cut / "student.pt")
    assert scores(tmp_path / "whole") == scores(cut)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(cut / "checkpoint.pt", weights_only=True)
    for key in ("method", "optimizer"):  # extra modules and the critic's optimiser included
        assert_same_state(whole[key], resumed[key], key)


def test_an_existing_run_needs_resume_and_the_same_settings(tmp_path, digits):
    train(kd_method(digits), digits, config(epochs=1), tmp_path, quiet=True)
    for resume in (False, True):  # finished: the same answer either way
        with pytest.raises(KdsearchError, match=r"finished run .* nothing to train or resume"):
            train(kd_method(digits), digits, config(epochs=1), tmp_path, resume=resume,
                  quiet=True)
    (tmp_path / "summary.json").unlink()  # as if stopped after its last checkpoint
    with pytest.raises(KdsearchError, match="--resume"):
        train(kd_method(digits), digits, config(epochs=1), tmp_path, quiet=True)
    with pytest.raises(KdsearchError, match=r"lr: 0\.05 -> 0\.1"):
        train(kd_method(digits), digits, config(epochs=1, lr=0.1), tmp_path, resume=True,
              quiet=True)


class DivergingKD(get_method("kd")):
    """KD whose loss becomes NaN at epoch 2, step 2."""

    steps = 0

    def forward_train(self, images, labels, epoch):
        logits, losses = super().forward_train(images, labels, epoch)
        self.steps += 1
        if epoch == 2 and self.steps == 5:  # 3 steps per epoch
            losses["loss_kd"] = losses["loss_kd"] * float("nan")
        return logits, losses


def test_a_nan_loss_stops_naming_epoch_and_step(tmp_path, digits):
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 of 3.*holds epoch 1"):
        train(kd_method(digits, DivergingKD), digits, config(epochs=3), tmp_path, quiet=True)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    weights = [v for v in checkpoint["method"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)


STAGES = """\
- method: ce
  epochs: 1
- method: kd
  epochs: 1
  lr: 0.01
  options: {temperature: 2}
"""


def test_stages_run_in_turn_and_finished_stages_are_skipped(tmp_path, digits, capsys):
    (tmp_path / "stages.yaml").write_text(STAGES)
    stages = load_stages(tmp_path / "stages.yaml")
    method = kd_method(digits)
    out = tmp_path / "run"
    summary = run_stages(stages, method.student, method.teacher, digits, config(), out, quiet=True)
    first, second = out / "stage1_ce", out / "stage2_kd"
    assert [s["method"] for s in summary["stages"]] == ["ce", "kd"]
    assert summary["stages"][1]["config"]["lr"] == 0.01
    assert summary["stages"][1]["method_options"]["temperature"] == 2.0
    assert_same_weights(second / "student.pt", out / "student.pt")
    first_mtime = (first / "summary.json").stat().st_mtime_ns
    for name in ("summary.json", "student.pt"):
        (second / name).unlink()  # as if stage 2 was killed at its very end
    run_stages(stages, method.student, method.teacher, digits, config(), out, resume=True)
    assert "stage 1 of 2 (ce): finished, skipped" in capsys.readouterr().out
    assert (first / "summary.json").stat().st_mtime_ns == first_mtime
    assert (second / "summary.json").exists()
    (tmp_path / "stages.yaml").write_text(STAGES.replace("epochs: 1", "epochs: 2", 1))
    with pytest.raises(KdsearchError, match=r"stage1_ce was trained with other settings"):
        run_stages(load_stages(tmp_path / "stages.yaml"), method.student, method.teacher,
                   digits, config(), out, quiet=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: kd", "non-empty list"),
        ("- method: kd\n  epoch: 3", "stage 1: unknown key 'epoch'"),
        ("- method: kd\n- method: kdd", "stage 2.*did you mean: kd"),
        ("- method: kd\n  epochs: two", "stage 1: epochs: expected int"),
        ("- method: kd\n  epochs: true", "stage 1: epochs: expected int"),
        ("- method: kd\n  lr: fast", "stage 1: lr: expected a number"),
        ("- method: kd\n  options: 4", "stage 1: options: expected a mapping"),
        ("- method: kd\n  lr_milestones: [150]", "fractions of the epochs"),
        ("- epochs: 3", "stage 1: 'method' is required"),
        ("- method: kd\n  epochs: [", "not valid YAML"),
    ],
)
def test_bad_stages_files_are_rejected_with_the_key(tmp_path, text, message):
    (tmp_path / "stages.yaml").write_text(text)
    with pytest.raises(KdsearchError, match=message):
        load_stages(tmp_path / "stages.yaml")


def run_command(name: str, argv: list[str]) -> int:
    """Run ``kdsearch NAME ARGV`` through the command's own configure/run."""
    import importlib

    module = importlib.import_module(f"kdsearch.cli.{name}")
    parser = argparse.ArgumentParser()
    module.configure(parser)
    return module.run(parser.parse_args(argv))


def test_teacher_then_train_commands(tmp_path, capsys):
    data = ["--dataset", "digits", "--subset", "128", "--epochs", "1", "--device", "cpu"]
    assert run_command("teacher", ["--model", "digits_resnet8_half", *data,
                                   "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "teacher.pt").exists()
    student = ["--student", "digits_resnet8", "--teacher", "digits_resnet8_half", *data]
    weights = ["--teacher-weights", str(tmp_path / "t" / "teacher.pt")]
    assert run_command("train", [*student, *weights, "--out", str(tmp_path / "s")]) == 0
    assert "random weights" not in capsys.readouterr().err
    assert run_command("train", [*student, "--out", str(tmp_path / "u"), "--quiet"]) == 0
    assert "warning: no --teacher-weights: the teacher digits_resnet8_half has random" in \
        capsys.readouterr().err
    with pytest.raises(KdsearchError, match="did you mean: kd"):
        run_command("train", [*student, "--method", "kdd", "--out", str(tmp_path / "x")])


def test_train_command_exits_130_when_interrupted(tmp_path, monkeypatch, capsys):
    from kdsearch.cli import main

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("SIGTERM during epoch 3, step 7; checkpoint.pt holds epoch 2")

    monkeypatch.setattr("kdsearch.cli.train.train", interrupted)
    argv = ["train", "--student", "digits_resnet8", "--method", "ce", "--dataset", "digits",
            "--out", str(tmp_path)]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == ("kdsearch: interrupted: SIGTERM during epoch 3, "
                                               "step 7; checkpoint.pt holds epoch 2")


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_an_uninterrupted_run(tmp_path):
    argv = ["train", "--student", "digits_resnet8", "--teacher", "digits_resnet8_half",
            "--dataset", "digits", "--subset", "128", "--epochs", "8", "--device", "cpu",
            "--quiet"]
    # killed as soon as the first checkpoint exists, then within the 4th and the 7th epoch
    kill_and_resume(argv, tmp_path / "cut", "checkpoint.pt", "metrics.jsonl", points=(3, 6))
    run_to_the_end(argv, tmp_path / "whole")
    assert_same_weights(tmp_path / "whole" / "student.pt", tmp_path / "cut" / "student.pt")
    assert scores(tmp_path / "whole") == scores(tmp_path / "cut")


def test_no_untrained_teacher_warning_for_a_users_own_factory(capsys):
    """A ``FILE.py:NAME`` factory may load its own weights: no warning; a zoo name does."""
    from kdsearch.student.resolve import warn_untrained_teacher

    warn_untrained_teacher("my_models.py:pretrained_net", None)
    warn_untrained_teacher("resnet56", "teacher.pt")
    assert capsys.readouterr().err == ""
    warn_untrained_teacher("resnet56", None)
    assert capsys.readouterr().err.count("\n") == 1



def test_epoch_lines_stay_on_a_terminal_above_the_bar(monkeypatch, capsys):
    """On a terminal (even one that reports no size) each epoch leaves its line; brief
    leaves none."""
    from kdsearch.distill.progress import Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    record = {"epoch": 1, "loss": 0.5, "train_acc": 80.0, "test_acc": 75.0, "lr": 0.1,
              "images_per_s": 100.0}
    for brief in (False, True):
        progress = Progress(2, 0, quiet=False, brief=brief)
        assert not progress.bar.disable
        progress.epoch_done(record)
        progress.close()
        lines = [line for line in capsys.readouterr().out.splitlines() if "epoch 1/2" in line]
        assert len(lines) == (0 if brief else 1)
