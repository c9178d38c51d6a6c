"""The prepared GPU check (bench/gpu): its compact data and a CPU dry run of the whole script."""

from __future__ import annotations

import importlib.util
import io
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsearch.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench/gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compact_data_reads_back_the_same_dataset(tmp_path):
    compact = bench_module("compact")
    dataset = load_dataset("synthetic", num_classes=7, num_train=40, num_test=9, subset=30)
    compact.write_compact(dataset, tmp_path / "d.xz", subset=30)
    back = compact.load_compact(tmp_path / "d.xz")
    for key in compact.KEYS:
        assert torch.equal(getattr(back, key), getattr(dataset, key)), key
    assert (back.name, back.num_classes, back.mean, back.std, back.crop_padding, back.hflip) == (
        dataset.name, 7, dataset.mean, dataset.std, dataset.crop_padding, dataset.hflip)


def test_compact_data_with_a_changed_array_is_refused(tmp_path):
    compact = bench_module("compact")
    dataset = load_dataset("synthetic", num_classes=3, num_train=8, num_test=4)
    compact.write_compact(dataset, tmp_path / "d.xz")
    with np.load(io.BytesIO(lzma.decompress((tmp_path / "d.xz").read_bytes()))) as stored:
        arrays = {key: stored[key].copy() for key in stored.files}
    arrays["test_labels"][0] = (arrays["test_labels"][0] + 1) % 3
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (tmp_path / "d.xz").write_bytes(lzma.compress(buffer.getvalue()))
    with pytest.raises(ValueError, match="test_labels does not match its checksum"):
        compact.load_compact(tmp_path / "d.xz")


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_with_tiny_sizes(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "bench/gpu/run.sh"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.json", "log.txt", "smoke.json", "summary.json", "throughput.json"]
    phases = json.loads((out / "summary.json").read_text())["phases"]
    assert phases["smoke"]["failed"] == {}
    assert set(phases["smoke"]["checks"].values()) <= {"PASS", "SKIP"}
    assert phases["smoke"]["checks"]["extraction_exact_float32"] == "PASS"
    for run in phases["throughput"].values():
        assert run["exit"] == 0 and run["kd"] > 0
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert {run["folder"] for run in accuracy["runs"]} == {
        "hand-designed_resnet20", "searched_like_resnet20"}  # the first wave of 2 jobs
    assert all(0 <= run["best_test_acc"] <= 100 for run in accuracy["runs"])
