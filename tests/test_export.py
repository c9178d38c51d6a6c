"""kdsearch export: ONNX, TorchScript and torch.export files of a student, checked against
PyTorch at batch sizes other than the export's; refusals on one line."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from kdsearch.cli import main
from kdsearch.deploy import EXPORT_FORMATS, export_model
from kdsearch.deploy.export import CHECK_BATCHES, EXPORT_BATCH
from kdsearch.errors import KdsearchError
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Selection
from kdsearch.io import save_torch, write_json
from kdsearch.models import build_model
from kdsearch.student.spec import build_student, load_student, make_spec, student_state

DIGITS = (1, 8, 8)


def write_digits_student(folder: Path) -> tuple[Path, Path]:
    """student.json and student.pt of a student cut from digits_resnet14 (every other
    channel of each unit kept, the last residual block removed), teacher weights sliced."""
    torch.manual_seed(0)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    units = TopologyGraph(teacher, DIGITS).units
    kept = {u.id: list(range(0, u.size, 2)) for u in units.channels if u.searchable}
    last_block = [u.id for u in units.blocks if u.searchable][-1]
    info = {"model": "digits_resnet14", "num_classes": 10, "input_size": list(DIGITS)}
    spec = make_spec(info, units, Selection(kept=kept, removed_blocks={last_block}), 0, 0)
    spec_path = write_json(folder / "student.json", spec)
    student = build_student(spec, teacher=teacher, fresh=False)
    weights = save_torch(folder / "student.pt", student_state(student))
    return spec_path, weights


@pytest.fixture
def student_files(tmp_path):
    return write_digits_student(tmp_path)


def load_runner(fmt: str, data: bytes):
    """The exported file, loaded as a user would, as a function of a batch."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(io.BytesIO(data))
    return torch.export.load(io.BytesIO(data)).module()


FORMATS = [pytest.param(f, marks=pytest.mark.slow) if f == "exported" else f  # 8 s
           for f in EXPORT_FORMATS.names()]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_a_checked_file_with_a_dynamic_batch(fmt, student_files, tmp_path,
                                                          capsys):
    spec, weights = student_files
    out = tmp_path / f"student.{fmt}"
    assert main(["export", str(spec), "--weights", str(weights), "--format", fmt,
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["max_abs_diff"] < 1e-4 and report["bytes"] == out.stat().st_size
    assert report["checked_batch_sizes"] == list(CHECK_BATCHES)
    assert EXPORT_BATCH not in CHECK_BATCHES
    student = load_student(spec, weights=str(weights)).model.eval()
    x = torch.randn(3, *DIGITS)  # a batch size neither exported nor checked
    with torch.no_grad():
        torch.testing.assert_close(load_runner(fmt, out.read_bytes())(x), student(x),
                                   rtol=1e-4, atol=1e-5)


def test_export_prints_what_the_difference_counts(student_files, tmp_path, capsys):
    spec, weights = student_files
    assert main(["export", str(spec), "--weights", str(weights), "--format", "onnx",
                 "--out", str(tmp_path / "s.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "max |onnx - PyTorch|" in printed and "largest absolute difference" in printed
    assert "batch sizes 1 and 5" in printed and "exported at 2" in printed


def one_line_error(capsys, *texts: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("kdsearch: error: "), err
    for text in texts:
        assert text in lines[0], (text, err)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_an_existing_out_file_is_refused_unless_overwrite(student_files, tmp_path, capsys):
    spec, weights = student_files
    out = tmp_path / "s.pt"
    out.write_text("a finished file")
    argv = ["export", str(spec), "--weights", str(weights), "--format", "torchscript",
            "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, "exists", "--overwrite")
    assert out.read_text() == "a finished file"
    assert main([*argv, "--overwrite"]) == 0
    assert torch.jit.load(str(out)) is not None


def test_a_difference_above_atol_writes_nothing(student_files, tmp_path, capsys):
    spec, weights = student_files
    out = tmp_path / "s.onnx"
    assert main(["export", str(spec), "--weights", str(weights), "--format", "onnx",
                 "--out", str(out), "--atol", "0"]) == 2
    one_line_error(capsys, "differs from PyTorch", "--atol 0", "not written")
    assert not out.exists() and list(tmp_path.glob(".s.onnx*")) == []


def test_missing_onnxruntime_names_the_extra(student_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if absent
    spec, _ = student_files
    assert main(["export", str(spec), "--format", "onnx", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "onnxruntime", "pip install kdsearch[export]")


class FixedBatch(nn.Module):
    """Hard-codes the batch size it was written for: a traced export cannot generalise."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.reshape(2, 64))


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x.flatten(1), x.mean()


def test_a_model_with_a_fixed_batch_size_fails_its_check():
    with pytest.raises(KdsearchError, match=r"fails at batch size 1 .*exported at 2"):
        export_model(FixedBatch(), DIGITS, "torchscript")


def test_a_model_without_one_output_tensor_is_one_line():
    with pytest.raises(KdsearchError, match="returns tuple; export needs"):
        export_model(TwoOutputs(), DIGITS, "onnx")


def test_an_unknown_format_lists_the_known_ones():
    with pytest.raises(KdsearchError, match=r"unknown export format 'tflite'.*onnx"):
        export_model(FixedBatch(), DIGITS, "tflite")


def test_export_leaves_the_model_as_it_was():
    model = build_model("digits_resnet8", num_classes=10, in_channels=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, DIGITS, "torchscript")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
