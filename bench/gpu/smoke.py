"""Phase 1 of the GPU check: every CUDA path of kdsearch once, on tiny models.

Each check runs in this process in turn and is reported PASS, FAIL (with its error's last
line) or SKIP (with why); a failure does not stop the others. The report is rewritten after
every check, so a phase killed at its time limit still leaves what it found::

    python bench/gpu/smoke.py --device cuda --out OUT/smoke.json

Checks, in this order (the slowest last: a phase stopped at its limit loses only it): the
environment; the teacher-logit cache under bf16 against the same run without it; torchrun
with 1 process (NCCL on CUDA, gloo on the CPU); a 5-step search; the extraction exactness
check in float32 on the device; export and latency of the searched student; 2 training
steps with bf16 autocast, channels-last and torch.compile (``kdsearch train --compile``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TEACHER, STUDENT = "resnet20", "resnet8"  # tiny CIFAR models: the paths matter, not speed
CHECKS: dict[str, Callable[[argparse.Namespace, Path], dict]] = {}


def check(name: str):
    def register(function):
        CHECKS[name] = function
        return function
    return register


def kdsearch(*argv: str) -> str:
    """Run a kdsearch command in this process; its printed output; an error if it failed."""
    from kdsearch.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(list(argv))
    if code:
        raise RuntimeError(f"kdsearch {argv[0]} exited {code}: {printed.getvalue().strip()}")
    return printed.getvalue()


def data_args(args: argparse.Namespace, images: int) -> list[str]:
    return ["--dataset", "synthetic", "--num-classes", "10", "--subset", str(images),
            "--device", args.device, "--quiet"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@check("environment")
def environment(args: argparse.Namespace, work: Path) -> dict:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda_available": torch.cuda.is_available()}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch.cuda.is_available() is False")
        found.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                     bf16=torch.cuda.is_bf16_supported(),
                     memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30))
    for module in ("torchvision", "networkx", "scipy", "matplotlib", "yaml", "tqdm", "sklearn",
                   "onnx", "onnxruntime", "optuna", "torch_pruning"):
        try:
            found[module] = getattr(importlib.import_module(module), "__version__", "present")
        except ImportError:
            found[module] = None  # optuna and torch_pruning are absent on the rented GPU
    return found


@check("teacher_cache_bf16")
def teacher_cache(args: argparse.Namespace, work: Path) -> dict:
    """3 epochs with and without --cache-teacher: the cached run should be the same run."""
    runs = {}
    for cached in (False, True):
        out = work / f"cache_{cached}"
        kdsearch("train", "--teacher", TEACHER, "--student", STUDENT, *data_args(args, 256),
                 "--epochs", "3", "--out", str(out), *(["--cache-teacher"] if cached else []))
        runs[cached] = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    losses = {cached: [r["loss"] for r in records] for cached, records in runs.items()}
    difference = max(abs(a - b) for a, b in zip(losses[False], losses[True], strict=True))
    if difference > 1e-2:  # cuDNN may pick other kernels for the smaller batches of misses
        raise RuntimeError(f"cached and uncached losses differ by {difference:.3g}")
    return {"max_loss_difference": difference, "numerics": read_json(
        work / "cache_True" / "summary.json")["numerics"]}


@check("torchrun_1_process")
def torchrun(args: argparse.Namespace, work: Path) -> dict:
    """``torchrun --nproc_per_node 1 -m kdsearch train`` (NCCL on CUDA, gloo on the CPU)."""
    out = work / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "1", "-m", "kdsearch", "train", "--teacher", TEACHER,
               "--student", STUDENT, *data_args(args, 128), "--epochs", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode:
        lines = (done.stdout + done.stderr).strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"torchrun exited {done.returncode}: {lines[-1]}")
    return {"backend": "nccl" if args.device.startswith("cuda") else "gloo",
            "last_test_acc": read_json(out / "summary.json")["last_test_acc"]}


@check("search_5_steps")
def search(args: argparse.Namespace, work: Path) -> dict:
    out = work / "search"
    kdsearch("search", "--teacher", TEACHER, *data_args(args, 512), "--budget", "0.5x",
             "--steps", "5", "--out", str(out))
    summary = read_json(out / "summary.json")
    return {"student_macs": summary["student"]["macs"], "budget": summary["budget"]}


@check("extraction_exact_float32")
def extraction(args: argparse.Namespace, work: Path) -> dict:
    """A random cut of resnet20 (random BatchNorm statistics): the extracted student equals
    the gated teacher with hardened gates, in float32 on the device (TF32 off)."""
    from kdsearch.graph import Constraints, TopologyGraph
    from kdsearch.graph.units import Selection
    from kdsearch.models import build_model
    from kdsearch.search.gates import build_gated, fold_gates, gate_bank
    from kdsearch.student.extract import extract_student
    from kdsearch.student.run import harden_gates

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    generator = torch.Generator().manual_seed(0)
    teacher = build_model(TEACHER, num_classes=10)
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - .5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + .5)
    topology = TopologyGraph(teacher.eval(), (3, 32, 32), Constraints(min_channels=1))
    gated = build_gated(topology.gm, topology.units).eval()
    selection = Selection()
    for unit in topology.units.searchable():
        if unit.kind == "channels":
            keep = torch.randperm(unit.size, generator=generator)[:max(1, unit.size // 2)]
            selection.kept[unit.id] = sorted(keep.tolist())
        elif torch.rand(1, generator=generator) < 0.5:
            selection.removed_blocks.add(unit.id)
    harden_gates(gate_bank(gated).gates, selection)
    student = extract_student(fold_gates(gated), topology.units, selection).eval()
    x = torch.randn(64, 3, 32, 32, generator=generator).to(args.device)
    with torch.no_grad():
        expected, got = gated.to(args.device)(x), student.to(args.device)(x)
    difference = (expected - got).abs().max().item()
    if not difference <= 1e-4 * expected.abs().max().item():
        raise RuntimeError(f"extracted student differs from the gated teacher by {difference:.3g}")
    return {"max_abs_difference": difference, "removed_blocks": len(selection.removed_blocks)}


@check("export_and_latency")
def export_and_latency(args: argparse.Namespace, work: Path) -> dict:
    from kdsearch.cli.registry import COMMANDS

    missing = [name for name in ("export", "latency") if name not in COMMANDS]
    if missing:
        return {"skipped": f"kdsearch has no {' or '.join(missing)} command yet"}
    spec = work / "search" / "student.json"
    found = {}
    for fmt in ("onnx", "torchscript"):
        found[fmt] = kdsearch("export", str(spec), "--format", fmt,
                              "--out", str(work / f"student.{fmt}")).strip().splitlines()[-1]
    found["latency"] = kdsearch("latency", str(spec), "--device", args.device,
                                "--batch-size", "64").strip().splitlines()[-1]
    return found


@check("train_bf16_channels_last_compile")
def train_compiled(args: argparse.Namespace, work: Path) -> dict:
    """2 steps (128 images, batch 64) of the trainer with torch.compile (resnet8 as teacher
    too: compiling takes time in proportion to the graphs)."""
    out = work / "train_compiled"
    kdsearch("train", "--teacher", STUDENT, "--student", STUDENT, *data_args(args, 128),
             "--epochs", "1", "--compile", "--out", str(out))
    summary = read_json(out / "summary.json")
    if args.device.startswith("cuda") and summary["numerics"] != "bf16+channels_last":
        raise RuntimeError(f"trained in {summary['numerics']}, not bf16+channels_last")
    return {"numerics": summary["numerics"], "images_per_s": summary["images_per_s"],
            "last_test_acc": summary["last_test_acc"]}


def run_checks(args: argparse.Namespace) -> dict:
    report = {"device": args.device, "checks": []}
    with tempfile.TemporaryDirectory(prefix="kdsearch-smoke-") as folder:
        for name, function in CHECKS.items():
            start = time.perf_counter()
            entry = {"name": name}
            try:
                details = function(args, Path(folder))
                entry["status"] = "SKIP" if "skipped" in details else "PASS"
                entry["details"] = details
            except Exception as err:  # every check runs and is reported, whatever fails
                entry["status"] = "FAIL"
                entry["error"] = last_line(err)
                entry["traceback"] = traceback.format_exc(limit=-4)
            entry["seconds"] = round(time.perf_counter() - start, 1)
            report["checks"].append(entry)
            print(f"  {entry['status']:<4} {name:<34} {entry['seconds']:>6.1f} s  "
                  f"{entry.get('error', '')}", flush=True)
            write(args.out, report)
    return report


def last_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def write(path: Path, report: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="the report (JSON)")
    args = parser.parse_args(argv)
    report = run_checks(args)
    return int(any(entry["status"] == "FAIL" for entry in report["checks"]))


if __name__ == "__main__":
    sys.exit(main())
