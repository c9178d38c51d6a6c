"""``show_run``: find the runs in a directory and write their figures.

A *search run* holds ``graph.json`` and ``student.json`` (``kdsearch search``); it gets
``graph``, ``layer_widths``, ``stage_macs`` and, with ``search_log.jsonl``, ``gates``. A
*training run* holds ``metrics.jsonl`` (``kdsearch train`` / ``teacher``); it gets
``training``. A directory holding several training runs (a demo, a pipeline) also gets
``test_accuracy``, comparing them. Subfolders are searched; figures of ``RUN_DIR/sub`` go
to ``OUT/sub``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdsearch.errors import KdsearchError
from kdsearch.io import read_json, read_jsonl
from kdsearch.show import data, draw

SEARCH_FILES = ("graph.json", "student.json")
METRICS = "metrics.jsonl"
LATENCY = "latency.json"  # kdsearch latency RUN/student.json --out RUN/latency.json
FIGURES = "figures"
MAX_DEPTH = 6  # a pipeline keeps runs 4 folders deep (compare/train/NAME/seed0)


def show_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write PNG and SVG figures of every run under ``run_dir`` into ``out_dir`` (default
    ``run_dir/figures``); return the paths written."""
    root = Path(run_dir)
    if not root.is_dir():
        raise KdsearchError(f"{root}: no such directory")
    out = Path(out_dir) if out_dir is not None else root / FIGURES
    searches, trainings = find_runs(root, skip=out)
    if not searches and not trainings:
        raise KdsearchError(
            f"{root}: no kdsearch run here or in its subfolders (a search run holds "
            f"{' and '.join(SEARCH_FILES)}, a training run {METRICS})")
    written = []
    for path in searches:
        written += show_search(path, out / path.relative_to(root), _name(path, root))
    curves = {}
    for path in trainings:
        try:
            curves[_name(path, root)] = data.training_curves(read_jsonl(path / METRICS))
        except (KeyError, TypeError, AttributeError) as err:
            raise KdsearchError(f"{path / METRICS}: not a kdsearch metrics log "
                                f"({type(err).__name__}: {err})") from None
        figure = draw.draw_training_curves(curves[_name(path, root)], _train_title(path, root))
        written += draw.save_figure(figure, out / path.relative_to(root) / "training")
    if len(curves) > 1:
        written += draw.save_figure(draw.draw_comparison(curves), out / "test_accuracy")
    return written


def find_runs(root: Path, skip: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Search runs and training runs at or below ``root`` (hidden folders and ``skip``
    left out; a training run needs at least one logged epoch)."""
    searches, trainings = [], []
    skip = skip.resolve() if skip is not None else None
    for folder, subfolders, files in os.walk(root):
        path = Path(folder)
        depth = len(path.relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and depth < MAX_DEPTH
                               and (path / d).resolve() != skip)
        if all(name in files for name in SEARCH_FILES):
            searches.append(path)
        if METRICS in files and read_jsonl(path / METRICS):
            trainings.append(path)
    return searches, trainings


def show_search(path: Path, out: Path, name: str = "") -> list[Path]:
    """The figures of one search run."""
    summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
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
    figures = {
        "graph": draw.draw_graph(layout, title),
        "layer_widths": draw.draw_layer_widths(
            widths, f"{teacher}: output channels per layer, teacher vs student"),
        "stage_macs": draw.draw_stage_macs(
            stages, f"{teacher}: MACs per stage, teacher vs student"),
    }
    if curves is not None:
        budget = f" at budget {summary['budget']}" if summary.get("budget") else ""
        figures["gates"] = draw.draw_gate_curves(
            curves, f"{teacher}: search{budget}, {len(curves.steps)} steps")
    return [file for stem, figure in figures.items()
            for file in draw.save_figure(figure, out / stem)]


def _graph_title(teacher: str, stages: list[data.StageMacs], spec: dict,
                 summary: dict) -> str:
    teacher_macs = sum(s.teacher for s in stages)
    student_macs = sum(s.student for s in stages)
    fmt = draw.si
    title = (f"{teacher} → student: {fmt(student_macs)} of {fmt(teacher_macs)} MACs "
             f"({student_macs / max(teacher_macs, 1):.0%})")
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


def _train_title(path: Path, root: Path) -> str:
    """``distill/0.5x (resnet8): kd from resnet56, best test accuracy 71.2%``."""
    summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    title = _name(path, root)
    model = str(summary.get("student") or summary.get("model") or "")
    if model and "/" not in model and not model.endswith(".json"):  # a zoo name, not a file
        title += f" ({model})"
    details = []
    if summary.get("method"):
        teacher = f" from {summary['teacher']}" if summary.get("teacher") else ""
        details.append(f"{summary['method']}{teacher}")
    if isinstance(summary.get("best_test_acc"), int | float):
        details.append(f"best test accuracy {summary['best_test_acc']:.1f}%")
    if not details:
        return title
    text = ", ".join(details)
    return f"{title}: {text}" if len(title) + len(text) < 100 else f"{title}\n{text}"


def _name(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    return str(relative) if relative.parts else root.resolve().name
