"""The prepared GPU check: smoke test, throughput, accuracy at speed, in under 9 minutes.

Each phase runs as its own process under a time limit, so a crash or a hang in one still
leaves the others their time; each writes its JSON into ``--out`` as it goes, and this
script ends with ``summary.json`` and a short printed summary (see bench/gpu/README.md)::

    python bench/gpu/check.py --out OUT                 # on the GPU (bash bench/gpu/run.sh OUT)
    python bench/gpu/check.py --out OUT --dry-run       # the same on the CPU, tiny sizes

Phases and their limits on the GPU (dry run: much smaller sizes, the same code):
  smoke      120 s   bench/gpu/smoke.py: every CUDA path once, PASS/FAIL/SKIP each
  throughput 180 s   bench/trainer_throughput.py, kd and reviewkd (resnet32x4 -> resnet8x4),
                     the trainer against the classic loop with DataLoader workers: eager at
                     batch 64 (with the search step), eager at batch 512, kd compiled at 64
  accuracy   210 s   bench/gpu/accuracy.py: protocol (b) of results/search-quality, seeds
                     round the candidates until the time is up (needs the compact data)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "bench/gpu"
DATA = HERE / "data/cifar100-b.xz"
LIMITS = {"smoke": 120, "throughput": 180, "accuracy": 210}  # seconds, on the GPU
DRY_LIMITS = {"smoke": 240, "throughput": 240, "accuracy": 240}  # a loaded 2-core CPU
PAIR = "resnet32x4,resnet8x4"


def throughput_runs(dry: bool) -> dict[str, list[str]]:
    """Name -> arguments of bench/trainer_throughput.py, in the order they run."""
    if dry:
        tiny = ["--pair", "resnet8,resnet8", "--steps", "1", "--warmup", "1", "--reps", "1",
                "--workers", "0", "--batch-size", "16"]
        return {"eager_b16": tiny, "eager_b32": [*tiny[:-1], "32", "--no-search"]}
    common = ["--methods", "kd,reviewkd", "--pair", PAIR, "--reps", "3"]
    return {"eager_b64": [*common, "--batch-size", "64", "--steps", "100", "--warmup", "20"],
            "eager_b512": [*common, "--batch-size", "512", "--steps", "20", "--warmup", "5",
                           "--no-search"],
            # compiling takes about a minute per method: kd alone
            "compiled_b64": [*common, "--methods", "kd", "--batch-size", "64", "--steps", "100",
                             "--warmup", "40", "--compile", "--no-search"]}


def run_phase(name: str, command: list[str], limit: float, log: Path | None = None) -> dict:
    """Run one phase's process with a time limit; its exit code, time and last line."""
    start = time.perf_counter()
    print(f"== {name} (limit {limit:.0f} s): {' '.join(Path(c).name for c in command[:2])} "
          f"{' '.join(command[2:])}", flush=True)
    try:
        done = subprocess.run(command, timeout=limit, cwd=ROOT, env=environment(),
                              stdout=sys.stdout, stderr=subprocess.STDOUT)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    print(f"== {name}: exit {code} after {seconds} s", flush=True)
    return {"exit": code, "seconds": seconds}


def environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def smoke(args: argparse.Namespace, limits: dict) -> dict:
    result = run_phase("smoke", [sys.executable, str(HERE / "smoke.py"), "--device",
                                 args.device, "--out", str(args.out / "smoke.json")],
                       limits["smoke"])
    checks = read(args.out / "smoke.json").get("checks", [])
    result["checks"] = {c["name"]: c["status"] for c in checks}
    result["failed"] = {c["name"]: c["error"] for c in checks if c["status"] == "FAIL"}
    return result


def throughput(args: argparse.Namespace, limits: dict) -> dict:
    deadline = time.perf_counter() + limits["throughput"]
    runs, merged = throughput_runs(args.dry_run), {}
    for name, extra in runs.items():
        left = deadline - time.perf_counter()
        if left < 10:
            merged[name] = {"skipped": "the phase's time was up"}
            continue
        part = args.out / f"throughput_{name}.json"
        result = run_phase(f"throughput {name}", [
            sys.executable, str(ROOT / "bench/trainer_throughput.py"), "--device", args.device,
            *extra, "--json", str(part)], left)
        merged[name] = {**result, **read(part)}
        part.unlink(missing_ok=True)  # merged into throughput.json: at most 8 files come back
        write(args.out / "throughput.json", merged)
    return {name: {method: figures.get("ratio_median")
                   for method, figures in run.get("methods", {}).items()}
            | {"exit": run.get("exit", "skipped")} for name, run in merged.items()}


def accuracy(args: argparse.Namespace, limits: dict) -> dict:
    command = [sys.executable, str(HERE / "accuracy.py"), "--device", args.device,
               "--out", str(args.out / "accuracy.json")]
    if args.dry_run:
        command += ["--jobs", "2", "--candidates", "2", "--max-seeds", "2", "--epochs", "1",
                    "--seconds", "1"]
    elif not args.data.is_file():
        return {"skipped": f"no {args.data}: make it with bench/gpu/compact.py (README)"}
    else:
        command += ["--data", str(args.data), "--jobs", str(args.jobs),
                    "--seconds", str(limits["accuracy"] - 60)]  # a training takes < 60 s
    result = run_phase("accuracy", command, limits["accuracy"])
    report = read(args.out / "accuracy.json")
    result["rows"] = {row["student"]: (round(row["best_acc_mean"], 2), row["seeds"])
                      for row in report.get("rows", [])}
    result["searched_vs_random"] = report.get("searched_vs_random")
    return result


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write(path: Path, report: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def gpu_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU with tiny sizes (what the test suite runs)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"default {DATA}")
    parser.add_argument("--jobs", type=int, default=8, help="parallel trainings (accuracy)")
    parser.add_argument("--phases", default="smoke,throughput,accuracy")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.dry_run else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    limits = DRY_LIMITS if args.dry_run else LIMITS
    summary = {"device": gpu_name(args.device), "dry_run": args.dry_run,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "phases": {}}
    phases = {"smoke": smoke, "throughput": throughput, "accuracy": accuracy}
    for name in args.phases.split(","):
        summary["phases"][name] = phases[name](args, limits)
        write(args.out / "summary.json", summary)
    print_summary(summary)
    smoke_failed = summary["phases"].get("smoke", {}).get("failed")
    return 1 if smoke_failed else 0


def print_summary(summary: dict) -> None:
    print(f"\nGPU check on {summary['device']} ({summary['date']})")
    for name, result in summary["phases"].items():
        print(f"  {name}: {json.dumps(result)}")


if __name__ == "__main__":
    sys.exit(main())
