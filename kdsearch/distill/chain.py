"""The DGKD chain (Son et al. 2021): teacher -> assistants -> student, each densely guided.

Models are trained from the largest to the smallest, and each learns from *all* larger
models already trained: ``A1`` from ``T``, ``A2`` from ``T`` and ``A1``, ..., ``S`` from ``T``
and every assistant (method :class:`~kdsearch.distill.methods.dgkd.DGKD`). Stochastic
guide dropping (``keep_prob``, 0.75 by default) is used for the final student only; the
assistants keep every guide (``assistant_keep_prob = 1``), as in the paper.

Assistants are given (modules, zoo names or ``student.json`` specs; trained here from their
initial weights), or found by kdsearch itself: by default 2 assistants at MAC budgets
spaced geometrically between the teacher's and the student's MACs
(``T (S/T)^(i/(n+1))``, i = 1..n). The search is *nested*: ``A1`` is searched inside the
teacher, ``A2`` inside the trained ``A1``, and so on, so each assistant is a subgraph of the
model that guided the previous one; a searched assistant starts from fresh weights (like
``kdsearch train --student student.json``). A nested spec names its parent's
``student.json`` as its teacher: the chain rebuilds it from the parent, in order.

Layout of ``out_dir`` (a model whose ``summary.json`` exists is skipped on a re-run, so an
interrupted chain continues; a model interrupted mid-training continues with ``resume``)::

    assistant1_search/   search run of A1 (summary.json, student.json, ...), if searched
    assistant1/          A1's training run (metrics.jsonl, checkpoint.pt, summary.json, ...)
    ...
    student/             the final student's training run
    summary.json         every link: role, model, guides, MACs, params, accuracies
    student.pt           the final student's weights
"""

from __future__ import annotations

import copy
import dataclasses
import gc
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdsearch.data.base import ImageDataset
from kdsearch.distill import distributed
from kdsearch.distill.config import Runtime, TrainConfig
from kdsearch.distill.method import build_method, get_method, method_names
from kdsearch.distill.stages import ADVICE, stage_changes
from kdsearch.distill.trainer import SUMMARY, train
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.io import copy_file, ensure_out_dir, read_json, write_json
from kdsearch.models.checkpoint import load_weights
from kdsearch.search.budget import parse_budget
from kdsearch.search.config import SearchConfig
from kdsearch.steps import finished_step, run_step
from kdsearch.student.resolve import resolve_model

DEFAULT_ASSISTANTS = 2
WEIGHTS = "student.pt"


@dataclasses.dataclass
class Link:
    """One model of the chain: its role (``assistant1`` ... ``student``) and what it is."""

    role: str
    model: nn.Module
    label: str


def train_dgkd_chain(
    teacher: nn.Module,
    student: nn.Module,
    dataset: ImageDataset,
    config: TrainConfig,
    out_dir: str | Path,
    assistants: Sequence[nn.Module | str] | None = None,
    budgets: Sequence[str | int] | None = None,
    *,
    num_assistants: int = DEFAULT_ASSISTANTS,
    teacher_name: str = "teacher",
    search_config: SearchConfig | None = None,
    constraints=None,
    assistant_keep_prob: float = 1.0,
    resume: bool = False,
    quiet: bool = False,
    info: dict[str, Any] | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Train the DGKD chain into ``out_dir``; returns (and writes) ``OUT/summary.json``.

    ``assistants`` (largest first after sorting by MACs) or ``budgets`` (``"0.6x"`` of the
    teacher's MACs, ``"1.2M"``, ``like:NAME`` or an int; default: ``num_assistants``
    geometric steps) choose the assistants; ``assistants=[]`` trains the student from the
    teacher alone. ``teacher_name`` picks the search preset (its family; ``generic`` if it
    is not a zoo name) unless ``search_config``/``constraints`` are given; the search runs
    on ``config.device``. ``config.method_options`` (temperature, kd_weight, keep_prob) go
    to every link, except that assistants use ``assistant_keep_prob``. ``student`` is
    trained in place; the teacher must be trained already. ``method`` trains every link:
    a registered method that ``trains_a_chain`` (default: the one registered, ``dgkd``).
    """
    method = method or chain_method()
    if not get_method(method).trains_a_chain:
        raise KdsearchError(f"method {method} does not train a chain")
    if assistants is not None and budgets is not None:
        raise KdsearchError("give assistants or assistant budgets, not both")
    out = ensure_out_dir(out_dir)
    chain = Chain(teacher, teacher_name, dataset, config, out, resume, quiet, info or {},
                  method)
    if assistants is not None:
        for index, (label, model) in enumerate(chain.given(assistants), start=1):
            chain.train_link(Link(f"assistant{index}", model, label), assistant_keep_prob)
    else:
        search = _search_settings(teacher_name, config, search_config, constraints)
        for index, macs in enumerate(chain.budgets(student, budgets, num_assistants), start=1):
            link = chain.searched(f"assistant{index}", macs, *search)
            chain.train_link(link, assistant_keep_prob)
    chain.train_link(Link("student", student, chain.info.get("student") or "student"), None)
    return chain.finish()


def chain_method() -> str:
    """The registered method that trains a chain."""
    return next(name for name in method_names() if get_method(name).trains_a_chain)


class Chain:
    """The models trained so far (the guides of the next one) and their run summaries."""

    def __init__(self, teacher, teacher_name, dataset, config, out, resume, quiet, info,
                 method: str):
        self.dataset, self.config, self.out, self.method = dataset, config, out, method
        # under torchrun: rank 0 searches and writes the chain's files, every rank trains
        self.dist = distributed.setup(Runtime.for_config(config).device)
        self.resume, self.quiet, self.info = resume, quiet or not self.dist.is_main, info
        self.guides: list[Link] = [Link("teacher", teacher, teacher_name)]
        self.records: list[dict[str, Any]] = []

    def given(self, assistants: Sequence[nn.Module | str]) -> list[tuple[str, nn.Module]]:
        """``(label, module)`` per assistant, built for the dataset, largest MACs first."""
        models = []
        for index, item in enumerate(assistants, start=1):
            torch.manual_seed(self.config.seed + index)  # fresh weights, reproducibly
            model = item if isinstance(item, nn.Module) else self._resolve(item)
            models.append((item if isinstance(item, str) else type(item).__name__, model))
        return sorted(models, key=lambda pair: -self.macs(pair[1]))

    def budgets(self, student: nn.Module, budgets, count: int) -> list[int]:
        """The assistants' MAC budgets, largest first, strictly between S and T."""
        teacher_macs, student_macs = self.macs(self.guides[0].model), self.macs(student)
        if budgets is None:
            ratio = student_macs / teacher_macs
            chosen = [round(teacher_macs * ratio ** (i / (count + 1))) for i in range(1, count + 1)]
        else:
            chosen = [b if isinstance(b, int) else parse_budget(b, teacher_macs, self._zoo_macs)
                      for b in budgets]
        chosen = sorted(chosen, reverse=True)
        if len(set(chosen)) != len(chosen) or (chosen and chosen[-1] <= student_macs):
            raise KdsearchError(
                f"assistant budgets must be distinct and above the student's "
                f"{student_macs / 1e6:.3f}M MACs, got "
                f"{', '.join(f'{b / 1e6:.3f}M' for b in chosen)}")
        return chosen

    def searched(self, role: str, budget_macs: int, search_config, constraints) -> Link:
        """The assistant searched at ``budget_macs`` inside the last trained model (nested)."""
        from kdsearch.student.run import search_changes, search_student
        from kdsearch.student.spec import build_student

        parent = self.guides[-1]
        search_dir = self.out / f"{role}_search"
        budget = str(budget_macs)
        changes = search_changes(search_config, len(self.dataset.train_labels), budget,
                                 constraints)
        advice = "restore the budgets and search settings or use another output directory"
        if self.dist.is_main:
            search = partial(search_student, _cpu_copy(parent.model).requires_grad_(True),
                             parent.label, self.dataset, budget, search_config, constraints,
                             seed=self.config.seed, progress=not self.quiet, resume=True)
            run_step(search_dir, lambda folder: search(folder).summary, changes, note=self.note,
                label=f"{role}: searching {budget_macs / 1e6:.3f}M MACs inside {parent.label}",
                made="searched", advice=advice)
        self.dist.barrier()  # the others read the search's files
        finished_step(search_dir, changes, made="searched", advice=advice)
        torch.manual_seed(self.config.seed)  # fresh weights, reproducibly
        spec = read_json(search_dir / "student.json")
        model = build_student(spec, teacher=_cpu_copy(parent.model), fresh=True)
        return Link(role, model, str(search_dir / "student.json"))

    def train_link(self, link: Link, keep_prob: float | None) -> None:
        """Train ``link.model`` from every guide (skipped if its run finished); add it."""
        run_dir = self.out / link.role
        options = dict(self.config.method_options)
        if keep_prob is not None:
            options["keep_prob"] = keep_prob
        config = self.config.replace(method_options=options)
        guides = [guide.label for guide in self.guides]
        label = f"{link.role} ({link.label}) learning from {', '.join(guides)}"
        summary, ran = run_step(run_dir, partial(self._train, link, config, guides),
                                stage_changes(config), note=self.note, label=label,
                                made="trained", advice=ADVICE)
        if not ran:
            load_weights(link.model, run_dir / WEIGHTS)
        self.records.append(_record(link, guides, run_dir, summary))
        self.guides.append(link)

    def _train(self, link: Link, config: TrainConfig, guides: list[str],
               run_dir: Path) -> dict[str, Any]:
        options = config.method_options
        method = build_method(self.method, link.model, self.guides[0].model,
                              {**options, "assistants": [g.model for g in self.guides[1:]]},
                              self.dataset.input_size)
        summary = train(method, self.dataset, config, run_dir, resume=self.resume,
                        quiet=self.quiet, info={**self.info, "role": link.role,
                                                "model": link.label, "guides": guides})
        if self.dist.world_size > 1:  # this link's DDP reducer goes now, not mid-way through
            gc.collect()  # the next link's training
        return summary

    def finish(self) -> dict[str, Any]:
        """Copy the student's weights to the top and write the chain's summary."""
        summary = {"chain": self.records, "final_test_acc": self.records[-1]["last_test_acc"],
                   "final_best_test_acc": self.records[-1]["best_test_acc"],
                   "weights": WEIGHTS, **self.info}
        if self.dist.is_main:
            copy_file(self.out / "student" / WEIGHTS, self.out / WEIGHTS)
            write_json(self.out / SUMMARY, summary)
        return summary

    def macs(self, model: nn.Module) -> int:
        with torch.random.fork_rng(devices=[]):  # counting draws an example input
            return count_model(_cpu_copy(model), self.dataset.input_size).macs

    def _resolve(self, name: str) -> nn.Module:
        """A zoo model or ``student.json`` for the dataset (a spec must fit it already)."""
        data = self.dataset
        resolved = resolve_model(name, data.num_classes, data.input_size)
        if (resolved.num_classes, tuple(resolved.input_size)) != (data.num_classes,
                                                                  data.input_size):
            raise KdsearchError(f"assistant {name} is for {resolved.num_classes} classes at "
                                f"{tuple(resolved.input_size)}, not {data.name}'s")
        return resolved.model

    def _zoo_macs(self, name: str) -> int:
        return self.macs(self._resolve(name))

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def _record(link: Link, guides: list[str], run_dir: Path, summary: dict) -> dict[str, Any]:
    return {"role": link.role, "model": link.label, "guides": guides, "dir": str(run_dir),
            "macs": summary.get("student_macs"), "params": summary.get("student_params"),
            "best_test_acc": summary["best_test_acc"], "last_test_acc": summary["last_test_acc"]}


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A CPU copy (tracing needs CPU inputs; the original stays where it is)."""
    return copy.deepcopy(model).cpu()


def _search_settings(teacher_name: str, config: TrainConfig, search_config, constraints):
    """``(search config, constraints)``: the teacher family's preset, on the training device."""
    if search_config is not None and constraints is not None:
        return search_config, constraints
    from kdsearch.presets import load_preset
    from kdsearch.student.resolve import family_of

    preset_constraints, preset_config = load_preset(family_of(teacher_name))
    if search_config is None:
        search_config = dataclasses.replace(preset_config, device=config.device)
    return search_config, constraints or preset_constraints
