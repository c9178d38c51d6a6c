"""``run_pipeline``: the steps of a pipeline run, each skipped when its outputs exist."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError
from kdsearch.io import ensure_out_dir, read_json, write_json
from kdsearch.numerics import set_threads
from kdsearch.pipeline.config import PipelineConfig, json_ready, load_config, parse_config, tag
from kdsearch.pipeline.report import read_comparison, student_row, write_report
from kdsearch.steps import run_step

TEACHER_WEIGHTS = "teacher.pt"
FIGURES_INDEX = "figures.json"


def run_pipeline(config: PipelineConfig | dict[str, Any] | str | Path,
                 out_dir: str | Path | None = None,
                 quiet: bool = False, base_dir: str | Path | None = None,
                 threads: int | None = None) -> dict[str, Any]:
    """Run (or continue) the pipeline ``config`` (a mapping, a YAML path or a checked
    :class:`PipelineConfig`) into ``out_dir``
    (default: the config's ``out``). Relative input paths of a mapping resolve in
    ``base_dir`` (default: the current directory). Returns what ``results.json`` holds:
    ``out``, ``teacher`` and ``students`` rows, ``comparison`` rows (or None), ``figures``,
    ``steps`` (step name -> ``"ran"`` or ``"skipped"``) and ``seconds`` (of the steps run).
    ``threads`` (the command line's) wins over the config's ``threads``; with neither, the
    thread count is left as it is."""
    config = _checked(config, base_dir)
    if (threads or config.threads) is not None:
        set_threads(threads or config.threads)
    return PipelineRun(config, ensure_out_dir(out_dir or config.out), quiet).execute()


def train_teacher(config: PipelineConfig | dict[str, Any] | str | Path, out_dir: str | Path,
                  quiet: bool = False, base_dir: str | Path | None = None) -> Path:
    """Only the teacher step of ``config`` (into ``out_dir/teacher``); returns its weights."""
    run = PipelineRun(_checked(config, base_dir), ensure_out_dir(out_dir), quiet)
    run.teacher_step()
    return run.teacher_weights


def _checked(config: PipelineConfig | dict[str, Any] | str | Path, base_dir) -> PipelineConfig:
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, str | Path):
        return parse_config(load_config(config), Path(config).resolve().parent, str(config))
    return parse_config(config, base_dir)


class PipelineRun:
    """The steps of one pipeline run; models and data are loaded only when a step needs them."""

    def __init__(self, config: PipelineConfig, out: Path, quiet: bool):
        self.config, self.out, self.quiet = config, out, quiet
        self.record = config.to_dict()  # config.json, and the steps' recorded inputs
        self.steps: dict[str, str] = {}  # step -> "ran" or "skipped"
        self.seconds: dict[str, float] = {}  # step -> wall-clock seconds (steps that ran)
        self._dataset = self._teacher = None

    def execute(self) -> dict[str, Any]:
        teacher_row = self.teacher_step()
        students = [self.student_steps(budget) for budget in self.config.search.budgets]
        comparison = self.compare_step() if self.config.compare else None
        results = {"out": str(self.out), "teacher": teacher_row, "students": students,
                   "comparison": comparison, "figures": [], "steps": self.steps,
                   "seconds": self.seconds}
        write_json(self.out / "config.json", self.record)
        write_report(results, self.out)
        if self.config.show:
            results["figures"] = self.show_step()
            write_report(results, self.out)
        return results

    # -- steps ------------------------------------------------------------------------------
    def teacher_step(self) -> dict[str, Any]:
        folder, trained = self.out / "teacher", self.config.teacher.weights is None
        done = "summary.json" if trained else "evaluation.json"
        self.step("teacher", folder, done, self.teacher_inputs(),
                  self.train_teacher if trained else self.evaluate_teacher)
        summary = read_json(folder / done)
        # the teacher's accuracy is that of the weights every later step uses (its last
        # epoch): "last", as in comparison.md; no "best" (no step uses the best epoch's)
        return {"model": "teacher", "architecture": self.config.teacher.model,
                "best_acc": None, "last_acc": summary["last_test_acc"]}

    def train_teacher(self, folder: Path) -> None:
        import torch

        from kdsearch.distill import build_method, train

        teacher = self.config.teacher
        torch.manual_seed(self.config.seed)  # the teacher's initialisation
        model = self.build_model(teacher.model)
        method = build_method("ce", model, None, {}, self.dataset.input_size)
        train(method, self.dataset, self.train_config(teacher.train), folder, resume=True,
              quiet=self.quiet, role="teacher", info={"model": teacher.model}, brief=True)

    def evaluate_teacher(self, folder: Path) -> None:
        accuracy = evaluate_accuracy(self.teacher, self.dataset, self.config.device)
        write_json(folder / "evaluation.json", {
            "weights": self.config.teacher.weights, "best_test_acc": accuracy,
            "last_test_acc": accuracy})

    def student_steps(self, budget: str) -> dict[str, Any]:
        search_dir = self.out / "search" / tag(budget)
        distill_dir = self.out / "distill" / tag(budget)
        search_inputs = {**self.teacher_inputs(), "search": self.search_inputs(), "budget": budget}
        self.step(f"search {budget}", search_dir, "summary.json", search_inputs,
                  lambda folder: self.search(budget, folder))
        self.step(f"distill {budget}", distill_dir, "summary.json",
                  {**search_inputs, "distill": self.record["distill"]},
                  lambda folder: self.distill(search_dir, folder))
        return student_row(budget, read_json(search_dir / "summary.json"),
                           read_json(distill_dir / "summary.json"))

    def search(self, budget: str, folder: Path) -> None:
        from kdsearch.student.run import search_student

        constraints, config = self.search_setup()
        search_student(self.teacher, self.config.teacher.model, self.dataset, budget,
                       config, constraints, folder, seed=self.config.seed,
                       progress=not self.quiet, resume=True)

    def distill(self, search_dir: Path, folder: Path) -> None:
        import torch

        from kdsearch.distill import get_method, run_stages
        from kdsearch.models.checkpoint import load_weights
        from kdsearch.student.spec import build_student

        distill = self.config.distill
        torch.manual_seed(self.config.seed)  # the student's initialisation
        student = build_student(read_json(search_dir / "student.json"), fresh=True)
        if distill.init == "search":
            load_weights(student, search_dir / "student.pt")
        needs_teacher = any(get_method(stage.method).needs_teacher for stage in distill.stages)
        run_stages(distill.stages, student, self.teacher if needs_teacher else None,
                   self.dataset, self.train_config(distill.settings), folder, resume=True,
                   quiet=self.quiet, info={"student": str(search_dir / "student.json"),
                                           "teacher": self.config.teacher.model},
                   brief=True)

    def compare_step(self) -> list[dict[str, Any]]:
        folder = self.out / "compare"
        inputs = {**self.teacher_inputs(), "compare": self.record["compare"]}
        self.step("compare", folder, "comparison.csv", inputs, self.compare)
        return read_comparison(folder / "comparison.csv")

    def compare(self, folder: Path) -> None:
        from kdsearch.compare import Comparison, run_comparison

        dataset = self.config.dataset
        settings = Comparison(
            teacher=self.config.teacher.model, teacher_weights=str(self.teacher_weights),
            dataset=dataset.name,
            data_options={"data_dir": dataset.data_dir, "subset": dataset.subset,
                          "input_size": dataset.input_tuple},
            device=self.config.device, quiet=self.quiet, **self.config.compare)
        run_comparison(settings, folder)

    def show_step(self) -> list[str]:
        folder = self.out / "figures"
        if "ran" in self.steps.values():  # new results: the figures are redrawn
            (folder / FIGURES_INDEX).unlink(missing_ok=True)
        self.step("show", folder, FIGURES_INDEX, {}, self.show)
        return read_json(folder / FIGURES_INDEX)

    def show(self, folder: Path) -> None:
        from kdsearch.show import show_run

        paths = show_run(self.out, folder)
        write_json(folder / FIGURES_INDEX, [str(Path(p).relative_to(self.out)) for p in paths])

    # -- helpers ----------------------------------------------------------------------------
    def step(self, name: str, folder: Path, done: str, inputs: dict, action) -> None:
        """Run ``action(folder)`` unless ``folder/done`` exists (after checking the inputs)."""
        check_inputs(folder, inputs)  # recorded in inputs.json before the step starts
        start = time.perf_counter()
        _, ran = run_step(folder, lambda path: action(path) or {}, lambda _: [], note=self.note,
                          label=f"[{name}]", done=done)
        self.steps[name] = "ran" if ran else "skipped"
        if ran:
            self.seconds[name] = round(time.perf_counter() - start, 2)

    def teacher_inputs(self) -> dict[str, Any]:
        return {key: self.record[key] for key in ("dataset", "teacher", "seed")}

    def search_inputs(self) -> dict[str, Any]:
        return {key: value for key, value in self.record["search"].items() if key != "budgets"}

    def search_setup(self):
        from kdsearch.presets import load_preset

        search = self.config.search
        constraints, config = load_preset(search.preset)
        config = config.overridden(device=self.config.device, **search.settings)
        return dataclasses.replace(constraints, **search.constraints), config

    def train_config(self, settings: dict[str, Any]):
        from kdsearch.distill import TrainConfig

        return TrainConfig(seed=self.config.seed, device=self.config.device, **settings)

    @property
    def dataset(self):
        if self._dataset is None:
            from kdsearch.data import load_dataset

            spec = self.config.dataset
            self._dataset = load_dataset(spec.name, data_dir=spec.data_dir,
                                         subset=spec.subset, seed=self.config.seed,
                                         input_size=spec.input_tuple)
        return self._dataset

    @property
    def teacher_weights(self) -> Path:
        given = self.config.teacher.weights
        return Path(given) if given else self.out / "teacher" / TEACHER_WEIGHTS

    @property
    def teacher(self):
        if self._teacher is None:
            from kdsearch.models.checkpoint import load_weights

            self._teacher = self.build_model(self.config.teacher.model)
            load_weights(self._teacher, self.teacher_weights)
            self._teacher.eval()
        return self._teacher

    def build_model(self, name: str):
        from kdsearch.student.resolve import resolve_model

        return resolve_model(name, self.dataset.num_classes, self.dataset.input_size).model

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def check_inputs(folder: Path, inputs: dict[str, Any]) -> None:
    """Record ``inputs`` in ``folder/inputs.json``, or check they match the recorded ones."""
    record = folder / "inputs.json"
    if record.exists():
        difference = first_difference(read_json(record), json_ready(inputs))
        if difference:
            raise KdsearchError(f"{folder} holds a run made with other settings ({difference});"
                                " use another run directory or delete that folder")
        return
    write_json(ensure_out_dir(folder) / "inputs.json", inputs)


def first_difference(before: Any, now: Any, where: str = "") -> str | None:
    """``"key.path: before -> now"`` for the first difference, None when equal."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in dict.fromkeys([*before, *now]):
            found = first_difference(before.get(key), now.get(key),
                                     f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if before == now else f"{where or 'value'}: {before!r} -> {now!r}"


def evaluate_accuracy(model, dataset, device: str) -> float:
    """Top-1 test accuracy (%) of ``model`` (eval mode, no augmentation)."""
    from kdsearch.evaluation import evaluate

    return evaluate(model, dataset, device=device)["accuracy"]
