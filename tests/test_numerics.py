"""The numerics switch (bf16 + channels-last where the CPU computes bf16), threads, the
evaluation schedule, the cosine lr, the decoded-data cache and file permissions."""

from __future__ import annotations

import json
import math
import os
import re
import stat

import pytest
import torch

from kdsearch import numerics
from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, build_method, train
from kdsearch.distill.config import Runtime
from kdsearch.errors import KdsearchError
from kdsearch.io import read_jsonl, write_text
from kdsearch.numerics import Numerics, default_threads, set_threads
from kdsearch.student.resolve import resolve_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=192, seed=0)


def ce_method(dataset):
    torch.manual_seed(0)
    model = resolve_model("digits_resnet8", dataset.num_classes, dataset.input_size).model
    return build_method("ce", model, None, input_size=dataset.input_size)


@pytest.mark.parametrize("native, amp, channels_last, name", [
    (True, True, True, "bf16+channels_last"),
    (True, False, True, "float32"),  # channels-last alone is slower on the CPU
    (True, True, False, "bf16"),
    (True, False, False, "float32"),
    (False, True, True, "float32"),  # no native bf16: the fast path is not taken
])
def test_cpu_numerics_follow_native_bf16(monkeypatch, native, amp, channels_last, name):
    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: native)
    chosen = Numerics.for_device(CPU, amp, channels_last)
    assert chosen.name == name
    assert Runtime(CPU, amp, channels_last).numerics == chosen
    with chosen.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == (torch.bfloat16 if chosen.amp else torch.float32)


def test_native_bf16_is_what_torch_reports():
    reported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert numerics.cpu_has_native_bf16() == reported


def test_threads_default_from_env_then_idle_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert default_threads() == 1  # one of two cores busy
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert default_threads() == 1  # never fewer than one
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(KdsearchError, match="OMP_NUM_THREADS"):
        default_threads()


def test_set_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("amp", [True, False])
def test_training_records_numerics_and_threads(tmp_path, digits, amp):
    summary = train(ce_method(digits), digits, TrainConfig(epochs=1, device="cpu", amp=amp),
                    tmp_path, quiet=True)
    expected = Numerics.for_device(CPU, amp, True).name
    assert summary["numerics"] == expected and summary["threads"] == torch.get_num_threads()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["numerics"] == expected


def test_resume_with_other_numerics_is_refused(tmp_path, digits, monkeypatch):
    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: True)
    config = TrainConfig(epochs=2, device="cpu")
    train(ce_method(digits), digits, config.replace(epochs=1), tmp_path, quiet=True)
    (tmp_path / "summary.json").unlink()  # as if stopped after its checkpoint
    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: False)  # another machine
    conflict = re.escape("numerics: 'bf16+channels_last' -> 'float32'")
    with pytest.raises(KdsearchError, match=conflict):
        train(ce_method(digits), digits, config.replace(epochs=1), tmp_path, quiet=True,
              resume=True)


def test_cli_train_prints_and_records_numerics_and_threads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["teacher", "--model", "digits_resnet8", "--dataset", "digits", "--subset",
                 "128", "--epochs", "1", "--threads", "1", "--no-amp", "--out", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "on cpu (float32, 1 threads)" in first
    assert "; teacher 44,014 params" in first and "student" not in first  # it trains a teacher
    summary = json.loads((out / "summary.json").read_text())
    assert summary["numerics"] == "float32" and summary["threads"] == 1
    assert summary["teacher_params"] == 44014 and "student_params" not in summary
    assert (out / "teacher.pt").is_file()


def test_search_records_numerics_and_refuses_a_resume_with_others(tmp_path, capsys,
                                                                  monkeypatch):
    argv = ["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--budget", "0.5x",
            "--steps", "8", "--checkpoint-every", "4", "--threads", "1", "--quiet"]
    out = tmp_path / "s"
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["numerics"] == Numerics.for_device(CPU).name and summary["threads"] == 1
    assert "searching" not in capsys.readouterr().out  # --quiet

    def broken(*args, **kwargs):
        raise KdsearchError("stopped at the selection")

    stopped = tmp_path / "stopped"  # stops after the checkpoint of step 4
    monkeypatch.setattr("kdsearch.student.run.select_to_budget", broken)
    assert main([*argv, "--out", str(stopped)]) == 2
    assert (stopped / "search_checkpoint.pt").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*argv, "--out", str(stopped), "--resume", "--no-amp"]) == 2
    assert "settings differ" in capsys.readouterr().err


def test_eval_every_and_test_subset(tmp_path, digits):
    config = TrainConfig(epochs=4, device="cpu", eval_every=2, test_subset=50)
    summary = train(ce_method(digits), digits, config, tmp_path, quiet=True)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["test_images"] for r in records] == [0, 50, 0, len(digits.test_labels)]
    assert [r["test_subset"] for r in records] == [False, True, False, False]
    assert records[0]["test_acc"] is None and records[1]["test_acc"] is not None
    # best and last come from the epochs tested on the whole split only
    assert summary["best_epoch"] == 4 and summary["best_test_acc"] == records[-1]["test_acc"]


def test_cosine_schedule():
    config = TrainConfig(epochs=10, lr=0.1, schedule="cosine")
    assert config.lr_at(1) == pytest.approx(0.1)
    assert config.lr_at(6) == pytest.approx(0.05)
    assert config.lr_at(10) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)) / 2)
    assert "cosine" in config.schedule_text()
    with pytest.raises(KdsearchError, match="unknown schedule"):
        TrainConfig(schedule="linear")


def test_files_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        import importlib

        import kdsearch.io as io_module

        importlib.reload(io_module)  # the umask is read at import
        io_module.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
        importlib.reload(io_module)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o666 & ~previous


def test_resume_of_a_finished_run_is_refused(tmp_path, digits):
    train(ce_method(digits), digits, TrainConfig(epochs=1, device="cpu"), tmp_path, quiet=True)
    with pytest.raises(KdsearchError, match="finished run"):
        train(ce_method(digits), digits, TrainConfig(epochs=1, device="cpu"), tmp_path,
              quiet=True, resume=True)
