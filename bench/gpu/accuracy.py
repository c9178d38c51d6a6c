"""Phase 3 of the GPU check: as much of the search-quality protocol (b) as the time allows.

Protocol (b) (``results/search-quality``) trains every candidate student from scratch with
KD from the trained resnet56 for 10 epochs on a seeded 10,000-image CIFAR-100 subset, 2 seeds,
on the CPU. Here the same candidates (the searched student, the controls cut from the teacher
and the hand-designed resnet20, taken from ``results/search-quality/state/b``) train with the
same settings (each CPU run's own ``config``, with ``device`` and ``seed`` changed) on the
GPU, several trainings at once as processes on the one GPU (a small CIFAR model leaves most
of it idle). Seeds go round the candidates (seed 0 of every candidate, then seed 1, ...): a
new training starts while the longest one so far would still end within ``--seconds``.

The report (rewritten after each training) holds every run, a table row per candidate in the
columns of ``comparison.csv`` (mean, std, Welch test against the hand-designed student), the
CPU rows of the same candidates beside them, and searched against random (Welch)::

    python bench/gpu/accuracy.py --data bench/gpu/data/cifar100-b.xz --out OUT/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "results/search-quality/state/b"
TEACHER = ("resnet56", ROOT / "results/teachers/resnet56-cifar100/teacher.pt")
HAND = "resnet20"


def candidates(state: Path) -> list[dict]:
    """The protocol's students: hand-designed, searched, the controls (by folder), then the
    depth-only search and its random depth allocations when ``state``'s sibling ``depth``
    holds them (results/search-quality/state/depth, and draws 3-4 in depth-random/state),
    then the width-floor search (the default since the seventh session) and its random
    draws (results/search-quality/floor/resnet20/state/b). ``cpu_runs``: each one's CPU
    runs with the fair initialisation (for the depth-only candidates those of
    results/search-quality/seeds/depth and depth-random)."""
    results = state.parent.parent
    depth = [state.parent / "depth", results / "depth-random/state"]
    depth_runs = [results / "seeds/depth/state/train", results / "depth-random/state/train"]
    floor = results / "floor/resnet20/state/b"
    found = [{"kind": "hand-designed", "folder": f"hand-designed_{HAND}", "model": HAND,
              "runs": [state / "train"]}]
    for prefix, specs, runs in (("", [state], [state / "train"]), ("depth-", depth, depth_runs),
                                ("floor-", [floor], [floor / "train"])):
        if not (specs[0] / "search/like_resnet20/student.json").is_file():
            continue
        found.append({"kind": f"{prefix}searched", "folder": "searched_like_resnet20",
                      "model": str(specs[0] / "search/like_resnet20/student.json"),
                      "runs": runs})
        controls = [c for folder in specs if (folder / "controls").is_dir()
                    for c in (folder / "controls").iterdir()]
        for control in sorted(controls, key=lambda c: c.name):
            found.append({"kind": prefix + control.name.split("_")[0], "folder": control.name,
                          "model": str(control / "student.json"), "runs": runs})
    for candidate in found:
        summaries = sorted(path for folder in candidate.pop("runs")
                           for path in (folder / candidate["folder"]).glob("seed*/summary.json"))
        candidate["cpu_runs"] = [json.loads(path.read_text()) for path in summaries]
        for prefix in ("depth-", "floor-"):
            if candidate["kind"].startswith(prefix):  # its own training folder
                candidate["folder"] = prefix[:-1] + "_" + candidate["folder"]
    return found


# -- one training, in a worker process --------------------------------------------------------
_WORKER: dict = {}


def worker_start(data: str | None, device: str) -> None:
    """Load the data and the teacher once per worker process."""
    sys.path.insert(0, str(ROOT / "bench/gpu"))
    from kdsearch.numerics import set_threads
    from kdsearch.signals import tie_to_parent
    from kdsearch.student.resolve import resolve_model

    tie_to_parent()
    set_threads(2)
    _WORKER["dataset"] = load_data(data)
    dataset = _WORKER["dataset"]
    _WORKER["teacher"] = resolve_model(TEACHER[0], dataset.num_classes, dataset.input_size,
                                       weights=str(TEACHER[1])).model.eval()
    _WORKER["device"] = device


def load_data(data: str | None):
    """The compact protocol (b) data, or (``None``, the dry run) a small synthetic set."""
    if data is None:
        from kdsearch.data import load_dataset

        return load_dataset("synthetic", num_classes=100, num_train=128, num_test=64)
    from compact import load_compact

    return load_compact(data)


def train_one(task: tuple[dict, int, dict, str]) -> dict:
    """Train one candidate with one seed; its summary (plus the wall time)."""
    from kdsearch.distill import build_method, train
    from kdsearch.distill.config import TrainConfig
    from kdsearch.student.resolve import resolve_model

    candidate, seed, config, work = task
    dataset, start = _WORKER["dataset"], time.perf_counter()
    torch.manual_seed(seed)  # the student's initialisation, as kdsearch compare does
    student = resolve_model(candidate["model"], dataset.num_classes, dataset.input_size).model
    method = build_method("kd", student, _WORKER["teacher"], input_size=dataset.input_size)
    config = TrainConfig(**{**config, "device": _WORKER["device"], "seed": seed})
    summary = train(method, dataset, config, Path(work) / candidate["folder"] / f"seed{seed}",
                    quiet=True)
    return {**summary, "wall_s": time.perf_counter() - start}


# -- the schedule and the report --------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from kdsearch.signals import ForwardSignals

    students = candidates(args.state)[:args.candidates]
    config = dict(students[0]["cpu_runs"][0]["config"], **args.overrides)
    tasks = [(c, seed) for seed in range(args.max_seeds) for c in students]
    report = {"device": args.device, "jobs": args.jobs,
              "config": config, "runs": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    start, longest = time.perf_counter(), 0.0
    context = multiprocessing.get_context("spawn")
    with ForwardSignals(), tempfile.TemporaryDirectory(prefix="kdsearch-accuracy-") as work, \
            ProcessPoolExecutor(args.jobs, mp_context=context, initializer=worker_start,
                                initargs=(args.data, args.device)) as pool:
        running = {}
        while True:
            elapsed = time.perf_counter() - start
            # the first wave always starts; later ones while the longest run so far would fit
            while tasks and len(running) < args.jobs and (
                    not report["runs"] or elapsed + longest < args.seconds):
                candidate, seed = tasks.pop(0)
                running[pool.submit(train_one, (candidate, seed, config, work))] = (
                    candidate, seed)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                candidate, seed = running.pop(future)
                summary = future.result()
                longest = max(longest, summary["wall_s"])
                report["runs"].append(run_record(candidate, seed, summary))
                report["dataset"] = summary["dataset"]
                write(args.out, finish(report, students, time.perf_counter() - start))
    return finish(report, students, time.perf_counter() - start)


def run_record(candidate: dict, seed: int, summary: dict) -> dict:
    keep = ("best_test_acc", "last_test_acc", "student_macs", "student_params", "numerics",
            "images_per_s", "total_time_s", "wall_s")
    return {"kind": candidate["kind"], "folder": candidate["folder"], "seed": seed,
            **{key: summary[key] for key in keep}}


def finish(report: dict, students: list[dict], seconds: float) -> dict:
    """The table rows (GPU and CPU) and searched-vs-random, from the runs so far."""
    from kdsearch.compare.stats import comparison_row, welch

    by_folder = {c["folder"]: [r for r in report["runs"] if r["folder"] == c["folder"]]
                 for c in students}
    hand = by_folder[students[0]["folder"]]
    report["rows"], report["cpu_rows"] = [], []
    for candidate in students:
        runs = by_folder[candidate["folder"]]
        if runs:
            report["rows"].append(comparison_row(candidate["kind"], candidate["folder"],
                                                 "like:resnet20", runs, HAND, hand))
        if candidate["cpu_runs"]:
            report["cpu_rows"].append(comparison_row(
                candidate["kind"], candidate["folder"], "like:resnet20", candidate["cpu_runs"],
                HAND, students[0]["cpu_runs"]))
    for prefix in ("", "depth-", "floor-"):  # each search against its own random controls
        searched = [r["best_test_acc"] for r in report["runs"]
                    if r["kind"] == f"{prefix}searched"]
        random = [r["best_test_acc"] for r in report["runs"] if r["kind"] == f"{prefix}random"]
        if searched and random:
            versus = welch(searched, random)
            report[f"{prefix.replace('-', '_')}searched_vs_random"] = {
                "diff": versus.diff, "p": versus.p_value, "searched_runs": len(searched),
                "random_runs": len(random)}
    report["seconds"] = round(seconds, 1)
    return report


def write(path: Path, report: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the compact data (bench/gpu/compact.py); without it, "
                                       "a dry run on synthetic data")
    parser.add_argument("--state", type=Path, default=STATE)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=8, help="trainings at once (default 8)")
    parser.add_argument("--seconds", type=float, default=200,
                        help="start no training that would end after this (default 200)")
    parser.add_argument("--max-seeds", type=int, default=6)
    parser.add_argument("--candidates", type=int, help="only the first N candidates")
    parser.add_argument("--epochs", type=int, help="override the protocol's 10 (dry run)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.overrides = {"epochs": args.epochs} if args.epochs else {}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    write(args.out, report)
    for row in report["rows"]:
        print(f"  {row['kind']:<14} {row['student']:<28} {row['seeds']} seeds  best "
              f"{row['best_acc_mean']:.2f} ± {row['best_acc_std'] or 0:.2f} %")
    if "searched_vs_random" in report:
        versus = report["searched_vs_random"]
        p_text = "n/a" if versus["p"] is None else f"{versus['p']:.3g}"
        print(f"  searched - random: {versus['diff']:+.2f} points (Welch p {p_text})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
