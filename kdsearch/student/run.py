"""Search a student inside a teacher at a MAC budget and write the run directory.

``search_student`` is the whole of ``kdsearch search``: topology graph -> gates -> gated
search -> selection at the budget -> extraction, with every number checked by an
independent count of the extracted student.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.data import ImageDataset, dataset_batches
from kdsearch.errors import KdsearchError
from kdsearch.evaluation import evaluate
from kdsearch.graph.counting import count_model
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Selection, Units
from kdsearch.io import append_jsonl, ensure_out_dir, read_json, save_torch, write_json
from kdsearch.models.user import portable_name
from kdsearch.numerics import Numerics, resolve_device
from kdsearch.search.budget import parse_budget
from kdsearch.search.checkpoint import (
    CHECKPOINT,
    SearchCheckpoints,
    SearchInterrupted,
    refuse_unfinished,
    restore,
    resume_settings,
)
from kdsearch.search.config import SearchConfig
from kdsearch.search.cost import MacModel
from kdsearch.search.gates import build_gated, fold_gates, gate_bank
from kdsearch.search.search import GatedSearch
from kdsearch.search.select import (
    LANDING,
    SelectionReport,
    kept_mask,
    select_to_budget,
    smallest_macs,
)
from kdsearch.signals import StopSignals
from kdsearch.steps import config_changes
from kdsearch.student.extract import extract_student
from kdsearch.student.spec import make_spec, student_state


@dataclass(repr=False)
class SearchResult:
    student: fx.GraphModule
    spec: dict
    summary: dict
    selection: Selection

    def __repr__(self) -> str:
        s = self.summary
        return (f"SearchResult(student={s['student']['macs'] / 1e6:.2f}M MACs, "
                f"{s['student']['params']:,} params, {100 * s['budget_fraction']:.1f}% of "
                f"{s['budget']}; removed {s['channels_removed']} channels, "
                f"{s['blocks_removed']} blocks; test accuracy {s['student_test_acc']:.2f}% "
                f"before retraining)")


def search_student(teacher: nn.Module, teacher_name: str, dataset: ImageDataset, budget: str,
                   config: SearchConfig, constraints: Constraints, out_dir: str | Path,
                   seed: int = 0, progress: bool = True, resume: bool = False,
                   overwrite: bool = False) -> SearchResult:
    """Run the search and write summary.json, student.json, student.pt, graph.json and
    search_log.jsonl into ``out_dir``. ``progress``: print the setup line, a bar on a
    terminal, and at the end what was found (:func:`summary_text`).

    ``search_checkpoint.pt`` is written every ``config.checkpoint_every`` steps, after the
    last step and on SIGINT/SIGTERM (then :class:`SearchInterrupted` is raised);
    ``resume=True`` continues from it exactly. Without ``resume`` an existing checkpoint is a
    :class:`KdsearchError`, and so is a finished search (a ``summary.json``) unless
    ``overwrite``: a later distillation may use its student. summary.json is written last: a
    run stopped early has none.
    """
    device = resolve_device(config.device)  # a bad device fails before anything is written
    out = Path(out_dir)
    if not resume:
        refuse_unfinished(out / CHECKPOINT)  # before any work or write
        _refuse_another_kind(out)
        if (out / "summary.json").exists() and not overwrite:
            raise KdsearchError(f"{out} holds a finished search (summary.json); choose another "
                                "--out, or pass --overwrite to replace it")
    start = time.perf_counter()
    config = config.resolved(len(dataset.train_labels))
    torch.manual_seed(seed)
    teacher_info = {"model": portable_name(teacher_name), "num_classes": dataset.num_classes,
                    "input_size": list(dataset.input_size)}
    topology = TopologyGraph(teacher, dataset.input_size, constraints)
    units, mac_model = topology.units, MacModel(topology.units, topology.macs_per_node)
    budget_macs = _checked_budget(budget, topology, teacher_info, units, mac_model, constraints)
    if not units.searchable():
        raise KdsearchError(f"{teacher_name} has no searchable unit under these constraints")
    out = ensure_out_dir(out)
    if overwrite and not resume:  # the old search is gone from here on: nothing stale
        remove_search_files(out)
    write_json(out / "graph.json", topology.to_json())

    numerics = Numerics.for_device(device, config.amp, config.channels_last)
    gated = numerics.place(build_gated(topology.gm, units).to(device))
    search = GatedSearch(gated, numerics.place(teacher.to(device)), mac_model, budget_macs,
                         config, units, constraints, numerics)
    batches = dataset_batches(dataset, "train", config.batch_size, device, seed=seed,
                              channels_last=numerics.channels_last)
    log_path = out / "search_log.jsonl"
    settings = resume_settings(teacher_name, dataset, budget_macs, seed, asdict(config),
                               asdict(constraints), numerics.name)
    done, seconds_before = restore(out / CHECKPOINT, log_path, search, settings, resume)
    if progress:
        print(f"{'resuming after step ' + str(done) if done else 'searching'}: {teacher_name} "
              f"({topology.macs / 1e6:.2f}M MACs) at {budget_macs / 1e6:.2f}M MACs, "
              f"{config.steps} steps of {config.batch_size} on {device} ({numerics.name}, "
              f"{torch.get_num_threads()} threads)", flush=True)
    checkpoints = SearchCheckpoints(out / CHECKPOINT, search, settings,
                                    config.checkpoint_every, saved_step=done,
                                    seconds_before=seconds_before, started=start)
    bank = gate_bank(gated)
    with StopSignals() as stop:
        run = partial(search.run, batches, log=lambda s: append_jsonl(log_path, asdict(s)),
                      progress=progress, checkpoints=checkpoints, stop=stop)
        if done < config.select_steps:
            run(start=done, end=config.select_steps)
        if search.selected is None:
            # the gates' own answer; only where it misses [97%, 100%] of the budget do
            # units go or come back by gate value (removed_by_rank, restored_by_rank)
            selection, report = select_to_budget(units, mac_model, dict(bank.gates),
                                                 budget_macs, constraints, search.last_alive,
                                                 per_mac=False, keep_landed=True)
            search.freeze(kept_mask(bank.gates, selection), selection_record(selection, report))
        run(start=max(done, config.select_steps))
    try:  # the search is done and checkpointed: an interrupt here loses only this part
        selection, report = selection_from_record(search.selected)
        contiguous = torch.contiguous_format  # the float32 checks run on plain CPU tensors
        plain = fold_gates(gated.cpu().to(memory_format=contiguous))
        student = extract_student(plain, units, selection).eval()
        teacher.cpu().to(memory_format=contiguous)
        counted = count_model(student, dataset.input_size)
        if counted.macs != report.macs:
            raise RuntimeError(f"internal error: predicted {report.macs} MACs, counted "
                               f"{counted.macs}")
        tested = _test_metrics(student, teacher, dataset, numerics)
    except KeyboardInterrupt:
        raise SearchInterrupted(
            f"interrupted while extracting and testing the student, after the search's "
            f"last step; {checkpoints.where()}: rerun with --resume to finish") from None
    spec = make_spec(teacher_info, units, selection, counted.macs, counted.params)
    summary = _summary(len(dataset.train_labels), teacher, topology, units, selection, report,
                       counted, budget, budget_macs, search, tested, config, constraints, seed,
                       checkpoints.seconds())
    write_json(out / "student.json", spec)
    save_torch(out / "student.pt", student_state(student))
    write_json(out / "summary.json", summary)
    (out / CHECKPOINT).unlink(missing_ok=True)  # finished: the run needs no resume
    if progress:  # what it found, in a terminal, a log or a notebook alike
        print(summary_text(summary), flush=True)
    return SearchResult(student, spec, summary, selection)


# what a search and the commands run on its folder (latency, show) write there
SEARCH_FILES = ("summary.json", "student.json", "student.pt", "graph.json", "search_log.jsonl",
                "latency.json", "index.html", "figures")


def remove_search_files(out: Path) -> None:
    """Remove what an earlier search (and ``latency``, ``show`` on it) wrote in ``out``."""
    for name in SEARCH_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _refuse_another_kind(out: Path) -> None:
    """A folder holding another command's finished run (a teacher's, a training's) is no
    place for a search, even with --overwrite."""
    summary = out / "summary.json"
    if summary.exists() and "budget_macs" not in read_json(summary):
        raise KdsearchError(f"{out} holds another kind of run (its summary.json is not a "
                            "search's: a teacher or a training?); choose another --out")


def summary_text(summary: dict) -> str:
    """What a finished search found, in four lines (``kdsearch search`` prints them)."""
    teacher, student = summary["teacher"], summary["student"]
    return "\n".join([
        f"teacher  {teacher['macs'] / 1e6:9.2f}M MACs  {teacher['params'] / 1e6:7.3f}M params",
        f"student  {student['macs'] / 1e6:9.2f}M MACs  {student['params'] / 1e6:7.3f}M params"
        f"  ({100 * summary['budget_fraction']:.1f}% of the {summary['budget_macs'] / 1e6:.2f}M"
        " budget)",
        f"removed  {summary['channels_removed']}/{summary['channels_total']} searchable "
        f"channels, {summary['blocks_removed']}/{summary['blocks_total']} blocks; "
        f"search {summary['search_seconds']:.1f}s; the gates alone asked for "
        f"{summary['selection']['macs_from_gates'] / summary['budget_macs']:.2f}x the budget",
        f"student.pt before retraining: test accuracy {summary['student_test_acc']:.2f}% "
        f"(teacher {summary['teacher_test_acc']:.2f}%), KL(teacher||student) "
        f"{summary['student_test_kl']:.4f} nats per test image at T=1"])


def search_changes(config: SearchConfig, train_images: int, budget: str,
                   constraints: Constraints):
    """The check of a finished search's ``summary.json`` against ``config`` (resolved for
    ``train_images``), ``budget`` and ``constraints``: the settings that differ (see
    :mod:`kdsearch.steps`)."""
    resolved = config.resolved(train_images)

    def changes(summary: dict) -> list[str]:
        found = config_changes(summary.get("config", {}), resolved)
        found += constraints.changes(summary.get("constraints"))
        if summary.get("budget") != budget:
            found.append(f"budget: {summary.get('budget')!r} -> {budget!r}")
        return found

    return changes


RECIPE_EPOCHS = 240  # the CIFAR distillation recipe a found student is retrained with


def search_cost(config: SearchConfig, train_images: int, teacher_macs: int,
                student_macs: int) -> dict:
    """The search's length in epochs of the training split, and its compute as a fraction
    of one retraining of the student with KD on the 240-epoch recipe, counting a backward
    pass as two forwards: a search image costs the teacher's forward plus the gated
    network's forward and backward (4 teacher forwards; the selector's second backward
    while selecting, for the Fisher information, adds 2), a retraining image the teacher's
    forward plus the student's forward and backward. The gated network is counted at the
    teacher's size."""
    images = config.steps * config.batch_size
    fisher_images = config.select_steps * config.batch_size
    search = (images * 4 + fisher_images * 2) * teacher_macs
    retrain = RECIPE_EPOCHS * train_images * (teacher_macs + 3 * student_macs)
    return {"images": images, "epochs": round(images / max(train_images, 1), 3),
            "fraction_of_retraining": round(search / retrain, 4)}


def _checked_budget(budget: str, topology: TopologyGraph, teacher_info: dict, units: Units,
                    mac_model: MacModel, constraints: Constraints) -> int:
    def macs_of_model(name: str) -> int:
        from kdsearch.models import build_model

        model = build_model(name, teacher_info["num_classes"], teacher_info["input_size"][0])
        return count_model(model, tuple(teacher_info["input_size"])).macs

    budget_macs = parse_budget(budget, topology.macs, macs_of_model)
    floor = smallest_macs(units, mac_model, constraints)
    if budget_macs < floor:
        raise KdsearchError(
            f"budget {budget!r} ({budget_macs / 1e6:.3f}M MACs) is below the smallest "
            f"student these constraints allow ({floor / 1e6:.3f}M MACs)")
    return budget_macs


def harden_gates(gates: nn.ParameterDict, selection: Selection) -> None:
    """Zero the gates of everything the selection removes (kept gates keep their value)."""
    with torch.no_grad():
        for uid, mask in kept_mask(gates, selection).items():
            gates[uid].mul_(mask.to(gates[uid].device, gates[uid].dtype))


def selection_record(selection: Selection, report: SelectionReport) -> dict:
    """The selection and its report as plain values (kept in the search's checkpoint)."""
    return {"kept": {uid: list(map(int, k)) for uid, k in selection.kept.items()},
            "removed_blocks": sorted(selection.removed_blocks), "report": asdict(report)}


def selection_from_record(record: dict) -> tuple[Selection, SelectionReport]:
    return (Selection(kept={uid: list(k) for uid, k in record["kept"].items()},
                      removed_blocks=set(record["removed_blocks"])),
            SelectionReport(**record["report"]))


def _test_metrics(student: nn.Module, teacher: nn.Module, dataset: ImageDataset,
                  numerics: Numerics) -> dict[str, float]:
    """On the test split, on the CPU with the search's numerics where the CPU has them: the
    student's and the teacher's top-1 accuracy (%) and the mean KL(teacher || student) at
    T=1 (nats per image), the student as the search leaves it."""
    tested = evaluate(student, dataset, teacher=teacher, device="cpu", amp=numerics.amp,
                      channels_last=numerics.channels_last)
    return {"student_test_acc": round(tested["accuracy"], 3),
            "teacher_test_acc": round(tested["teacher_accuracy"], 3),
            "student_test_kl": round(tested["kl_to_teacher"], 5)}


def _summary(train_images, teacher, topology, units, selection, report, counted, budget,
             budget_macs,
             search, tested, config, constraints, seed, seconds) -> dict:
    by_id = units.by_id()
    removed_channels = sum(by_id[u].size - len(k) for u, k in selection.kept.items())
    return {
        "teacher": {"macs": topology.macs, "params": sum(p.numel() for p in teacher.parameters())},
        "student": {"macs": counted.macs, "params": counted.params, "flops": counted.flops},
        "budget": budget,
        "budget_macs": budget_macs,
        "budget_fraction": round(counted.macs / budget_macs, 6),
        # False: the constraints left no student within [97%, 100%] of the budget
        "budget_reached": counted.macs >= LANDING * budget_macs,
        "channels_removed": removed_channels,
        "channels_total": sum(u.size for u in units.channels if u.searchable),
        "blocks_removed": len(selection.removed_blocks),
        "blocks_removed_labels": sorted(by_id[b].label for b in selection.removed_blocks),
        "blocks_total": sum(1 for b in units.blocks if b.searchable),
        "selection": {"macs_from_gates": report.from_gates_macs,
                      "removed_by_rank": len(report.removed_by_rank),
                      "restored_by_rank": len(report.restored_by_rank)},
        # the search's length, and its compute as a fraction of retraining the student
        "search_cost": search_cost(config, train_images, topology.macs, counted.macs),
        "search": {"steps": config.steps, "selector": config.selector,
                   "final_kl": search.last_kl,
                   # the selector's last numbers while selecting (l1: lambda)
                   "selector_log": search.selector.log(),
                   # steps at which max_update held a weight tensor back
                   "capped_steps": search.capped_steps,
                   "seconds": round(seconds, 2)},
        # the student as extracted (student.pt), before any retraining: test accuracy (%),
        # the teacher's, and KL(teacher || student) at T=1 in nats per test image
        **tested,
        "numerics": search.numerics.name,
        "threads": torch.get_num_threads(),
        "search_seconds": round(seconds, 2),
        "config": asdict(config),
        "constraints": asdict(constraints),
        "seed": seed,
    }
