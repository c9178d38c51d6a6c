"""kdsearch latency: median and p90 wall time per batch (torch.utils.benchmark), eager,
compiled or onnxruntime; a student is timed against its teacher."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from test_export import DIGITS, one_line_error, write_digits_student

from kdsearch.cli import main
from kdsearch.deploy import Latency, measure_latency
from kdsearch.errors import KdsearchError

BUDGET = 0.05  # timed seconds per model: enough for the figures' shape, not their value


class Sleeper(nn.Module):
    """A model whose forward pass takes a known time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.fc = seconds, nn.Linear(4, 2)

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return self.fc(x)


def test_latency_times_a_forward_pass_in_milliseconds():
    latency = measure_latency(Sleeper(0.004), (4,), batch_size=3, min_run_time=0.1)
    assert isinstance(latency, Latency)
    assert 4.0 <= latency.median_ms <= latency.p90_ms < 40
    assert (latency.backend, latency.device, latency.batch_size) == ("eager", "cpu", 3)
    assert latency.threads == torch.get_num_threads() and latency.blocks >= 1


def test_latency_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_latency(model, (4,), batch_size=2, min_run_time=BUDGET)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_onnx_latency_runs_in_onnxruntime():
    latency = measure_latency(nn.Linear(4, 2), (4,), batch_size=2, backend="onnx",
                              threads=1, min_run_time=BUDGET)
    assert latency.backend == "onnx" and latency.threads == 1 and latency.median_ms > 0


@pytest.mark.slow  # torch.compile builds C++ code: tens of seconds on a busy CPU
def test_compiled_latency():
    latency = measure_latency(nn.Linear(4, 2), (4,), backend="compiled", min_run_time=BUDGET)
    assert latency.backend == "compiled" and latency.median_ms > 0


@pytest.mark.parametrize("backend, batch, error", [
    ("tvm", 1, "unknown latency backend 'tvm'"),
    ("eager", 0, "batch size of at least 1"),
])
def test_bad_settings_are_one_line(backend, batch, error):
    with pytest.raises(KdsearchError, match=error):
        measure_latency(nn.Linear(4, 2), (4,), batch_size=batch, backend=backend)


def test_latency_of_a_student_against_its_teacher(tmp_path, capsys):
    spec, _ = write_digits_student(tmp_path)
    out = tmp_path / "latency.json"
    assert main(["latency", str(spec), "--min-time", str(BUDGET), "--batch-size", "4",
                 "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert report["teacher"] == "digits_resnet14" and report["input_size"] == list(DIGITS)
    student, teacher = report["latency"], report["teacher_latency"]
    assert student["batch_size"] == teacher["batch_size"] == 4
    assert report["speedup"] == pytest.approx(teacher["median_ms"] / student["median_ms"])
    assert report["unit"] == "milliseconds per batch"
    assert main(["latency", str(spec), "--min-time", str(BUDGET), "--out", str(out)]) == 2
    one_line_error(capsys, "exists", "--overwrite")


def test_latency_text_says_what_it_measured(capsys):
    assert main(["latency", "digits_resnet8", "--min-time", str(BUDGET), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for text in ("wall time per batch of 1 x 1x8x8", "float32 eager on cpu, 1 thread",
                 "median", "p90", " ms ", "timed blocks of"):
        assert text in printed, text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_latency_on_a_missing_device_is_one_line(capsys):
    assert main(["latency", "digits_resnet8", "--device", "cuda"]) == 2
    one_line_error(capsys, "CUDA is not available")
