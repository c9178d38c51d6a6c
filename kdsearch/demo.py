"""``kdsearch demo``: the whole story on the embedded digits data, on CPU, in minutes.

1. train a teacher (``digits_resnet14``) with cross-entropy;
2. search students inside it at three budgets, one of them the MACs of the hand-designed
   ``digits_resnet8``;
3. retrain every found student and the hand-designed one from scratch with Hinton KD,
   the same recipe for all;
4. print (and write ``demo.md``/``demo.json``) a table: MACs, params, test accuracy.

Each step writes its own folder under the run directory and is skipped when its summary
already exists, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, build_method, train
from kdsearch.graph.counting import count_model
from kdsearch.io import ensure_out_dir, read_json, write_json, write_text
from kdsearch.models import build_model
from kdsearch.models.checkpoint import load_weights
from kdsearch.presets import load_preset
from kdsearch.search.run import search_student
from kdsearch.student.spec import build_student

TEACHER, HAND_DESIGNED = "digits_resnet14", "digits_resnet8"
BUDGETS = ("0.5x", f"like:{HAND_DESIGNED}", "0.15x")
TEACHER_EPOCHS, STUDENT_EPOCHS, SEARCH_STEPS = 15, 15, 150


def run_demo(out_dir: str | Path, quiet: bool = False) -> list[dict]:
    out = ensure_out_dir(out_dir)
    # models of a few hundred thousand MACs: thread start-up costs more than it saves,
    # and on a busy machine extra threads slow every step down many times over
    torch.set_num_threads(1)
    dataset = load_dataset("digits")
    teacher = _teacher(dataset, out / "teacher", quiet)
    rows = [_row("teacher", TEACHER, teacher, dataset, read_json(out / "teacher/summary.json"))]
    students = {f"searched @ {b}": _searched(teacher, dataset, b, out, quiet) for b in BUDGETS}
    students[f"hand-designed {HAND_DESIGNED}"] = lambda: build_model(
        HAND_DESIGNED, dataset.num_classes, dataset.input_size[0])
    for index, (label, make_student) in enumerate(students.items()):
        run = out / f"kd_{index}"
        student = make_student()
        summary = _distil(student, teacher, dataset, run, quiet)
        rows.append(_row(label, _name(label), student, dataset, summary))
    _report(rows, out)
    return rows


def _teacher(dataset, run: Path, quiet: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = build_model(TEACHER, dataset.num_classes, dataset.input_size[0])
    if not (run / "summary.json").exists():
        config = TrainConfig(epochs=TEACHER_EPOCHS, device="cpu")
        train(build_method("ce", teacher, None, input_size=dataset.input_size), dataset,
              config, run, resume=True, quiet=quiet)
    load_weights(teacher, str(run / "student.pt"))
    return teacher.eval()


def _searched(teacher, dataset, budget: str, out: Path, quiet: bool):
    tag = budget.replace(":", "_")
    run = out / f"search_{tag}"
    if not (run / "summary.json").exists():
        constraints, config = load_preset("digits")
        config.steps, config.device = SEARCH_STEPS, "cpu"
        search_student(teacher, TEACHER, dataset, budget, config, constraints, run,
                       progress=not quiet)
    spec = read_json(run / "student.json")
    return lambda: build_student(spec, fresh=True)


def _distil(student, teacher, dataset, run: Path, quiet: bool) -> dict:
    if (run / "summary.json").exists():
        load_weights(student, str(run / "student.pt"))
        return read_json(run / "summary.json")
    torch.manual_seed(0)
    config = TrainConfig(epochs=STUDENT_EPOCHS, device="cpu")
    method = build_method("kd", student, teacher, input_size=dataset.input_size)
    return train(method, dataset, config, run, resume=True, quiet=quiet)


def _name(label: str) -> str:
    return label.split()[-1] if label.startswith("hand") else "found in " + TEACHER


def _row(label, model_name, model, dataset, summary) -> dict:
    counts = count_model(model, dataset.input_size)
    return {"model": label, "architecture": model_name, "macs": counts.macs,
            "params": counts.params, "best_acc": summary.get("best_test_acc"),
            "last_acc": summary.get("last_test_acc")}


def _report(rows: list[dict], out: Path) -> None:
    lines = ["| model | MACs | params | best acc (%) | last acc (%) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.3f}M | {r['params'] / 1e3:.1f}K | "
                     f"{_pct(r['best_acc'])} | {_pct(r['last_acc'])} |")
    table = "\n".join(lines)
    note = (f"\nTeacher {TEACHER} trained {TEACHER_EPOCHS} epochs (CE); every student trained "
            f"{STUDENT_EPOCHS} epochs from scratch with Hinton KD (T=4, 0.1 CE + 0.9 KD). "
            "MACs: conv+linear per 1x8x8 sample. Accuracy: digits test split (360 images).\n")
    write_text(out / "demo.md", table + "\n" + note)
    write_json(out / "demo.json", rows)
    print(table + "\n" + note)
    print(f"run directory: {out}")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"
