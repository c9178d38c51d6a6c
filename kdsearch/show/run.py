"""``show_run``: find the runs in a directory, write their figures and the folder's index.

A *search run* holds ``graph.json`` and ``student.json`` (``kdsearch search``); it gets
``graph``, ``layer_widths``, ``stage_macs`` and, with ``search_log.jsonl``, ``gates``. A
*training run* holds ``metrics.jsonl`` (``kdsearch train`` / ``teacher``); it gets
``training``. A directory holding several training runs (a demo, a pipeline) also gets
``test_accuracy``, comparing them. A *tune run* holds ``trials.csv`` (``kdsearch tune``);
it gets ``pareto_front``. Subfolders are searched; figures of ``RUN_DIR/sub`` go to
``OUT/sub``. Last, ``index.html`` links every table and figure (:mod:`.index`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from kdsearch.errors import KdsearchError
from kdsearch.io import read_json, read_jsonl
from kdsearch.show import curves as draw_curves
from kdsearch.show import data, draw, trials
from kdsearch.show.index import write_index

SEARCH_FILES = ("graph.json", "student.json")
METRICS = "metrics.jsonl"
LATENCY = "latency.json"  # kdsearch latency RUN/student.json --out RUN/latency.json
FIGURES = "figures"
MAX_DEPTH = 6  # a pipeline keeps runs 4 folders deep (compare/train/NAME/seed0)


class Runs(NamedTuple):
    searches: list[Path]
    trainings: list[Path]
    tunes: list[Path]

    def about(self) -> str:
        counts = [(len(self.searches), "search"), (len(self.trainings), "training run"),
                  (len(self.tunes), "tune study")]
        found = [f"{n} {what}" + ("es" if what == "search" and n > 1 else "s" if n > 1 else "")
                 for n, what in counts if n]
        return f"A kdsearch run folder holding {', '.join(found)}."


def show_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write PNG and SVG figures of every run under ``run_dir`` into ``out_dir`` (default
    ``run_dir/figures``) and ``index.html``; return the paths written."""
    root = Path(run_dir)
    if not root.is_dir():
        raise KdsearchError(f"{root}: no such directory")
    out = Path(out_dir) if out_dir is not None else root / FIGURES
    runs = find_runs(root, skip=out)
    if not any(runs):
        raise KdsearchError(
            f"{root}: no kdsearch run here or in its subfolders (a search run holds "
            f"{' and '.join(SEARCH_FILES)}, a training run {METRICS}, a tune run "
            f"{trials.TRIALS})")
    written = []
    for path in runs.searches:
        written += show_search(path, out / path.relative_to(root), _name(path, root))
    written += show_trainings(runs.trainings, root, out)
    for path in runs.tunes:
        written += show_tune(path, out / path.relative_to(root))
    return [*written, write_index(root, out, written, runs.about())]


def find_runs(root: Path, skip: Path | None = None) -> Runs:
    """Search, training and tune runs at or below ``root`` (hidden folders and ``skip``
    left out; a training run needs at least one logged epoch)."""
    runs = Runs([], [], [])
    skip = skip.resolve() if skip is not None else None
    for folder, subfolders, files in os.walk(root):
        path = Path(folder)
        depth = len(path.relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and depth < MAX_DEPTH
                               and (path / d).resolve() != skip)
        if all(name in files for name in SEARCH_FILES):
            runs.searches.append(path)
        if METRICS in files and read_jsonl(path / METRICS):
            runs.trainings.append(path)
        if trials.TRIALS in files:
            runs.tunes.append(path)
    return runs


def show_search(path: Path, out: Path, name: str = "") -> list[Path]:
    """The figures of one search run."""
    summary = _summary(path)
    log = read_jsonl(path / "search_log.jsonl") if (path / "search_log.jsonl").exists() else []
    graph, spec = read_json(path / "graph.json"), read_json(path / "student.json")
    try:
        layout, widths = data.graph_layout(graph, spec), data.layer_widths(graph, spec)
        stages = data.stage_macs(graph, spec)
        curves = data.gate_curves(log, summary, spec) if log else None
        teacher = (spec.get("teacher") or {}).get("model") or name or "teacher"
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise KdsearchError(f"{path}: not the files of a kdsearch search "
                            f"({type(err).__name__}: {err})") from None
    title = _graph_title(teacher, stages, spec, summary) + _speed_line(path / LATENCY, teacher)
    written = draw.save_figure(draw.draw_graph(layout, title), out / "graph", draw.GRAPH_PX,
                               draw.GRAPH_DPI)
    figures = {
        "layer_widths": draw.draw_layer_widths(
            widths, f"{teacher}: output channels per layer, teacher vs student"),
        "stage_macs": draw.draw_stage_macs(
            stages, f"{teacher}: MACs per stage, teacher vs student"),
    }
    if curves is not None:
        budget = f" at budget {summary['budget']}" if summary.get("budget") else ""
        figures["gates"] = draw_curves.draw_gate_curves(
            curves, f"{teacher}: search{budget}, {len(curves.steps)} steps")
    return written + [file for stem, figure in figures.items()
                      for file in draw.save_figure(figure, out / stem)]


def show_trainings(paths: list[Path], root: Path, out: Path) -> list[Path]:
    """``training`` for each training run; ``test_accuracy`` comparing them, when several.
    Runs are named by their summary (kind and student), seeds told apart."""
    curves, summaries = {}, {}
    for path in paths:
        try:
            curves[path] = data.training_curves(read_jsonl(path / METRICS))
        except (KeyError, TypeError, AttributeError) as err:
            raise KdsearchError(f"{path / METRICS}: not a kdsearch metrics log "
                                f"({type(err).__name__}: {err})") from None
        summaries[path] = _summary(path)
    students = {path: data.run_label(summaries[path], _name(path, root)) for path in paths}
    labels = _distinct(students, summaries, root)
    written = []
    for path in paths:
        figure = draw_curves.draw_training_curves(curves[path],
                                                  _train_title(labels[path], summaries[path]))
        written += draw.save_figure(figure, out / path.relative_to(root) / "training")
    if len(curves) > 1:
        figure = draw_curves.draw_comparison(
            {labels[p]: curves[p] for p in paths}, _comparison_title(summaries),
            groups={labels[p]: students[p] for p in paths})
        written += draw.save_figure(figure, out / "test_accuracy")
    return written


def show_tune(path: Path, out: Path) -> list[Path]:
    """``pareto_front``: the trials of a tune run, from trials.csv and pareto.json."""
    pareto = read_json(path / trials.PARETO) if (path / trials.PARETO).exists() else None
    try:
        rows = trials.read_trials((path / trials.TRIALS).read_text())
        front = trials.tune_front(rows, pareto)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise KdsearchError(f"{path}: not the files of a kdsearch tune run "
                            f"({type(err).__name__}: {err})") from None
    return draw.save_figure(draw_curves.draw_tune_front(front), out / "pareto_front")


def _distinct(students: dict[Path, str], summaries: dict[Path, dict],
              root: Path) -> dict[Path, str]:
    """Legend labels: the student's, with the seed (or else the folder) where several runs
    share one."""
    labels = {}
    for path, student in students.items():
        same = [p for p, s in students.items() if s == student]
        seeds = {_seed(summaries[p]) for p in same}
        if len(same) == 1:
            labels[path] = student
        elif len(seeds) == len(same) and None not in seeds:
            labels[path] = f"{student}, seed {_seed(summaries[path])}"
        else:
            labels[path] = f"{student} ({_name(path, root)})"
    return labels


def _seed(summary: dict) -> int | None:
    config = summary.get("config")
    return config.get("seed") if isinstance(config, dict) else None


def _summary(path: Path) -> dict:
    summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    return summary if isinstance(summary, dict) else {}


def _graph_title(teacher: str, stages: list[data.StageMacs], spec: dict,
                 summary: dict) -> str:
    teacher_macs = sum(s.teacher for s in stages)
    student_macs = sum(s.student for s in stages)
    fmt = draw.si
    title = (f"{teacher} → student: {fmt(student_macs)} of {fmt(teacher_macs)} MACs "
             f"({draw.percent(student_macs / max(teacher_macs, 1))})")
    if summary.get("blocks_total") is not None:
        title += (f"\nremoved: {summary['blocks_removed']} of {summary['blocks_total']} "
                  f"residual blocks, {summary['channels_removed']} of "
                  f"{summary['channels_total']} searchable channels")
    elif spec.get("removed_blocks"):
        title += f"\nremoved: {len(spec['removed_blocks'])} residual blocks"
    return title


def _speed_line(path: Path, teacher: str) -> str:
    """``\nlatency: 1.21 ms vs 3.40 ms (teacher) per batch of 1, float32 eager on cpu: 2.81x
    faster``, from the run's latency.json; empty without one."""
    if not path.exists():
        return ""
    try:
        speed = data.speed(read_json(path), teacher)
    except (KeyError, TypeError, ValueError) as err:
        raise KdsearchError(f"{path}: not a kdsearch latency.json ({type(err).__name__}: "
                            f"{err})") from None
    except KdsearchError as err:
        raise KdsearchError(f"{path}: {err}") from None
    line = f"\nlatency: {speed.student_ms:.3g} ms"
    if speed.teacher_ms is not None:
        line += f" vs {speed.teacher_ms:.3g} ms (teacher)"
    line += f" per batch of {speed.batch_size}, float32 {speed.backend} on {speed.device}"
    return line + (f": {speed.speedup:.2f}x faster" if speed.speedup else "")


def _train_title(label: str, summary: dict) -> str:
    """``searched @ like:resnet20, seed 0: kd from resnet56, best test accuracy 71.2% (epoch
    28 of 30)``."""
    details = []
    if summary.get("method"):
        teacher = f" from {summary['teacher']}" if summary.get("teacher") else ""
        details.append(f"{summary['method']}{teacher}")
    if isinstance(summary.get("best_test_acc"), int | float):
        epoch = (f" (epoch {summary['best_epoch']} of {summary['epochs']})"
                 if summary.get("best_epoch") and summary.get("epochs") else "")
        details.append(f"best test accuracy {summary['best_test_acc']:.1f}%{epoch}")
    if not details:
        return label
    text = ", ".join(details)
    return f"{label}: {text}" if len(label) + len(text) < 100 else f"{label}\n{text}"


def _comparison_title(summaries: dict[Path, dict]) -> str:
    datasets = {s.get("dataset") for s in summaries.values()} - {None}
    where = f" on {datasets.pop()}" if len(datasets) == 1 else ""
    return f"test accuracy per epoch of {len(summaries)} training runs{where}"


def _name(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    return str(relative) if relative.parts else root.resolve().name
