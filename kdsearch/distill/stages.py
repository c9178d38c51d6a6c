"""Entry points that pick a method by name: :func:`train_student` and stages files.

A stages file (YAML) trains one student with several methods in turn, each stage starting
from the previous stage's student weights::

    - method: kd
      epochs: 200
      options: {temperature: 4}
    - method: reviewkd
      epochs: 40
      lr: 0.01

Keys: ``method`` (required), ``epochs``, ``options`` (the method's options), and the
training settings ``lr``, ``batch_size``, ``momentum``, ``weight_decay``, ``nesterov``,
``lr_milestones``, ``lr_decay``. Unset settings come from the command line / base config.
Stage ``i`` (1-based) writes into ``OUT/stage{i}_{method}/``; a stage whose
``summary.json`` exists is skipped on a re-run, and ``resume`` applies to the first
unfinished one. ``OUT/summary.json`` lists the stages; ``OUT/student.pt`` is the final student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdsearch.data.base import ImageDataset
from kdsearch.data.registry import load_dataset
from kdsearch.distill.config import TrainConfig
from kdsearch.distill.distributed import is_main_process
from kdsearch.distill.method import build_method, get_method, resolve_options
from kdsearch.distill.trainer import SUMMARY, train
from kdsearch.errors import KdsearchError
from kdsearch.io import copy_file, ensure_out_dir, read_yaml, write_json
from kdsearch.models.checkpoint import load_weights
from kdsearch.settings import from_mapping, given
from kdsearch.steps import config_changes, finished_step, run_step
from kdsearch.student.resolve import model_for_dataset

# Stage keys that override TrainConfig fields (of TrainConfig's types).
STAGE_SETTINGS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "nesterov",
                  "lr_milestones", "lr_decay")


@dataclass
class Stage:
    """One stage: a method, its options and the settings it overrides (the method must
    exist and take these options)."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict,
                                     metadata=given(TrainConfig, only=STAGE_SETTINGS, inline=True))

    def __post_init__(self) -> None:
        self.options = dict(self.options)
        resolve_options(get_method(self.method), self.options)

    def config(self, base: TrainConfig) -> TrainConfig:
        return base.replace(**self.settings, method_options=dict(self.options))

    def to_dict(self) -> dict[str, Any]:
        """The stage as a stages file writes it."""
        return {"method": self.method, "options": self.options, **self.settings}


def load_stages(path: str | Path) -> list[Stage]:
    """Read and check a stages file; :class:`KdsearchError` naming the file, stage and key."""
    content = read_yaml(path, "stages file")
    if not isinstance(content, list) or not content:
        raise KdsearchError(f"{path}: a stages file is a non-empty list of stages")
    return [parse_stage(entry, f"{path}: stage {i}") for i, entry in enumerate(content, 1)]


def parse_stage(entry: Any, where: str) -> Stage:
    """One stage from its YAML mapping (``where`` starts error messages)."""
    return from_mapping(Stage, entry, where)


def run_stages(
    stages: list[Stage],
    student: nn.Module,
    teacher: nn.Module | None,
    dataset: ImageDataset,
    base_config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    info: dict[str, Any] | None = None,
    brief: bool = False,
) -> dict[str, Any]:
    """Train ``student`` through ``stages``; returns (and writes) ``OUT/summary.json``.
    ``brief``: no per-epoch lines (see :func:`~kdsearch.distill.trainer.train`)."""
    out = ensure_out_dir(out_dir)
    pristine = copy.deepcopy(student)  # each stage gets a fresh module (no leftover hooks)
    summaries, weights = [], None
    for index, stage in enumerate(stages, start=1):
        stage_dir = out / f"stage{index}_{stage.method}"
        config = stage.config(base_config)
        context = {"pristine": pristine, "weights": weights, "teacher": teacher,
                   "dataset": dataset, "resume": resume, "quiet": quiet, "brief": brief,
                   "info": {**(info or {}), "stage": index}}
        summary, _ = run_step(stage_dir, partial(_train_stage, stage, config, **context),
                              stage_changes(config), note=partial(_note, quiet),
                              made="trained", advice=ADVICE,
                              label=f"stage {index} of {len(stages)} ({stage.method})")
        summaries.append(summary)
        weights = stage_dir / "student.pt"
    load_weights(student, weights)
    summary = {"stages": summaries, "final_test_acc": summaries[-1]["last_test_acc"],
               "weights": "student.pt", **(info or {})}
    if is_main_process():  # under torchrun the processes share the folder
        copy_file(weights, out / "student.pt")
        write_json(out / SUMMARY, summary)
    return summary


ADVICE = "restore the stages file or use another output directory"


def _train_stage(stage: Stage, config: TrainConfig, folder: Path, *, pristine: nn.Module,
                 weights: Path | None, teacher, dataset, resume: bool, quiet: bool,
                 brief: bool, info: dict[str, Any]) -> dict[str, Any]:
    """Train a fresh copy of the student (from the last stage's weights) for ``stage``."""
    model = copy.deepcopy(pristine)
    if weights is not None:
        load_weights(model, weights)
    method = build_method(stage.method, model, teacher, stage.options, dataset.input_size)
    return train(method, dataset, config, folder, resume=resume, quiet=quiet, info=info,
                 brief=brief)


def stage_changes(config: TrainConfig):
    """The check of a finished run's recorded config against ``config``."""
    return lambda summary: config_changes(summary.get("config", {}), config)


def finished_stage(stage_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run (None when unfinished); :class:`KdsearchError` if it
    ran with other settings."""
    return finished_step(stage_dir, stage_changes(config), made="trained", advice=ADVICE)


def train_student(
    student: nn.Module | str,
    teacher: nn.Module | str | None,
    method: str = "kd",
    dataset: ImageDataset | str = "digits",
    config: TrainConfig | None = None,
    out_dir: str | Path = "runs/train",
    *,
    resume: bool = False,
    quiet: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` with ``method``; returns the run's summary.

    Models are modules or names (zoo name, ``torchvision:NAME``, student.json), built for
    the dataset's classes and input size; ``dataset`` is an :class:`ImageDataset` or a name.
    ``config`` defaults to the CIFAR recipe; its ``method_options`` go to the method; ``info``
    is copied into the summary. The student module is trained in place (and left on the
    training device). See :func:`kdsearch.distill.trainer.train` for the files written.
    """
    config = config or TrainConfig()
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, seed=config.seed)
    torch.manual_seed(config.seed)  # model initialisation
    student = _as_model(student, dataset, "student")
    teacher = _as_model(teacher, dataset, "teacher") if teacher is not None else None
    built = build_method(method, student, teacher, config.method_options, dataset.input_size)
    return train(built, dataset, config, out_dir, resume=resume, quiet=quiet, info=info)


def _as_model(model: nn.Module | str, dataset: ImageDataset, role: str) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    return model_for_dataset(model, None, dataset, role)


def _note(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)
