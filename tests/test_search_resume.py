"""The gated search checkpoints, resumes exactly, stops on signals and on a non-finite KL."""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import kill_and_resume, run_to_the_end

import kdsearch.search.search as search_module
import kdsearch.search.select as select_module
from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.errors import KdsearchError
from kdsearch.graph import Constraints
from kdsearch.models import build_model
from kdsearch.search.checkpoint import CHECKPOINT, SearchInterrupted
from kdsearch.search.config import SearchConfig
from kdsearch.search.search import GatedSearch
from kdsearch.search.selectors import SELECTORS
from kdsearch.student.run import search_student


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run_search_with(out, digits, steps=12, every=3, resume=False, budget="0.4x", selector="fisher"):
    torch.manual_seed(0)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    config = SearchConfig(steps=steps, batch_size=64, device="cpu", checkpoint_every=every,
                          selector=selector)
    return search_student(teacher, "digits_resnet14", digits, budget, config,
                          Constraints(keep_stem=False, min_channels=2), out, seed=0,
                          progress=False, resume=resume)


run_search = run_search_with


def signal_after(monkeypatch, step: int, signum=signal.SIGINT) -> None:
    """Send ``signum`` to this process during search step ``step``."""
    original = GatedSearch.step

    def step_then_signal(self, at, images, labels):
        state = original(self, at, images, labels)
        if at == step:
            os.kill(os.getpid(), signum)
        return state

    monkeypatch.setattr(GatedSearch, "step", step_then_signal)


def saved_step(out: Path) -> int:
    return int(torch.load(out / CHECKPOINT, weights_only=True)["step"])


def assert_same_result(a: Path, b: Path) -> None:
    assert json.loads((a / "student.json").read_text()) == json.loads(
        (b / "student.json").read_text())
    first = torch.load(a / "student.pt", weights_only=True)
    second = torch.load(b / "student.pt", weights_only=True)
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert (a / "search_log.jsonl").read_text() == (b / "search_log.jsonl").read_text()


@pytest.mark.parametrize("selector", SELECTORS.names())
def test_interrupt_then_resume_matches_an_uninterrupted_run(selector, tmp_path, digits,
                                                           monkeypatch):
    run_search = functools.partial(run_search_with, selector=selector)
    run_search(tmp_path / "whole", digits)
    assert not (tmp_path / "whole" / CHECKPOINT).exists()  # removed once finished
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        signal_after(patch, 5)
        with pytest.raises(SearchInterrupted, match="SIGINT after search step 6 of 12"):
            run_search(cut, digits)
    assert saved_step(cut) == 6 and not (cut / "summary.json").exists()
    # the time the interrupted run spent is carried over: say it was an hour
    state = torch.load(cut / CHECKPOINT, weights_only=True)
    assert 0 < state["seconds"] < 600
    torch.save({**state, "seconds": 3600.0}, cut / CHECKPOINT)
    # lines a kill left past the checkpoint (one torn) are dropped on resume
    with open(cut / "search_log.jsonl", "a") as log:
        log.write(json.dumps({"step": 6, "kl": 0.0}) + "\n" + '{"step": 7, "k')
    result = run_search(cut, digits, resume=True)
    assert_same_result(tmp_path / "whole", cut)
    assert result.summary["search"]["steps"] == 12 and not (cut / CHECKPOINT).exists()
    assert 3600 < result.summary["search_seconds"] < 4200
    assert result.summary["search"]["seconds"] == result.summary["search_seconds"]
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert result.summary["search"]["final_kl"] == whole["search"]["final_kl"]


def test_sigterm_exits_130_and_the_checkpoint_guards_the_directory(tmp_path, monkeypatch,
                                                                   capsys):
    out = tmp_path / "run"
    argv = ["search", "--teacher", "digits_resnet14", "--dataset", "digits", "--budget", "0.5x",
            "--steps", "8", "--checkpoint-every", "3", "--out", str(out), "--quiet"]
    with monkeypatch.context() as patch:
        signal_after(patch, 3, signal.SIGTERM)
        assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kdsearch: interrupted: SIGTERM after search step 4 of 8")
    assert "--resume" in err[-1] and "Traceback" not in "".join(err) and saved_step(out) == 4
    assert not (out / "summary.json").exists()
    # without --resume: a clear error, nothing touched
    before = (out / CHECKPOINT).stat().st_mtime_ns
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unfinished search" in err and "--resume" in err and "Traceback" not in err
    assert (out / CHECKPOINT).stat().st_mtime_ns == before
    # --resume with other settings: refused, naming the setting
    assert main([*argv[:-1], "--steps", "9", "--quiet", "--resume"]) == 2
    assert "settings differ (config.steps: 8 -> 9)" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert (out / "summary.json").exists() and not (out / CHECKPOINT).exists()
    assert len((out / "search_log.jsonl").read_text().splitlines()) == 8
    assert main([*argv, "--resume"]) == 2  # finished: nothing to resume
    assert "holds a finished search" in capsys.readouterr().err


def test_a_nan_kl_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, digits,
                                                                 monkeypatch):
    calls = []
    original = search_module.kl_to_teacher

    def nan_at_step_7(*args, **kwargs):
        calls.append(1)
        kl = original(*args, **kwargs)
        return kl * float("nan") if len(calls) == 8 else kl

    monkeypatch.setattr(search_module, "kl_to_teacher", nan_at_step_7)
    with pytest.raises(KdsearchError, match=r"KL is nan at step 7; .* holds step 6"):
        run_search(tmp_path, digits)
    assert saved_step(tmp_path) == 6 and not (tmp_path / "summary.json").exists()
    log = (tmp_path / "search_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(7))


def test_a_budget_out_of_reach_is_reported(tmp_path, digits, monkeypatch, capsys):
    original = select_module.select_to_budget

    def short_of_budget(units, model, gates, budget, *args, **kwargs):
        selection, report = original(units, model, gates, int(budget * 0.8), *args, **kwargs)
        report.budget = budget
        return selection, report

    monkeypatch.setattr("kdsearch.student.run.select_to_budget", short_of_budget)
    out = tmp_path / "run"
    assert main(["search", "--teacher", "digits_resnet14", "--dataset", "digits", "--budget",
                 "0.5x", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget_reached"] is False and summary["budget_fraction"] <= 0.8
    err = capsys.readouterr().err
    used = int(10_000 * summary["budget_fraction"]) / 100
    assert f"warning: the student uses {used:.2f}% of the budget" in err


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_an_uninterrupted_run(tmp_path):
    argv = ["search", "--teacher", "digits_resnet14", "--dataset", "digits", "--budget", "0.4x",
            "--steps", "40", "--checkpoint-every", "4", "--device", "cpu", "--quiet"]
    # killed once the first checkpoint exists, then mid-way between checkpoints, twice
    kill_and_resume(argv, tmp_path / "cut", CHECKPOINT, "search_log.jsonl", points=(18, 31))
    run_to_the_end(argv, tmp_path / "whole")
    assert_same_result(tmp_path / "whole", tmp_path / "cut")


def test_an_interrupt_while_extracting_says_what_was_kept_and_resumes(tmp_path, digits,
                                                                      monkeypatch):
    import kdsearch.student.run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_test_metrics", interrupted)
        with pytest.raises(SearchInterrupted, match="holds step 12: rerun with --resume"):
            run_search(tmp_path, digits)
    assert not (tmp_path / "summary.json").exists()
    result = run_search(tmp_path, digits, resume=True)
    assert (tmp_path / "summary.json").exists() and result.summary["search"]["steps"] == 12
