"""Search a student inside a teacher at a MAC budget and write the run directory.

``search_student`` is the whole of ``kdsearch search``: topology graph -> gates -> gated
search -> selection at the budget -> extraction, with every number checked by an
independent count of the extracted student.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.data import ImageDataset, dataset_batches
from kdsearch.distill.progress import StopSignals
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Units
from kdsearch.io import append_jsonl, ensure_out_dir, save_torch, write_json
from kdsearch.models.user import portable_name
from kdsearch.search.budget import parse_budget
from kdsearch.search.checkpoint import (
    CHECKPOINT,
    SearchCheckpoints,
    refuse_unfinished,
    restore,
    resume_settings,
)
from kdsearch.search.config import SearchConfig
from kdsearch.search.cost import MacModel
from kdsearch.search.gates import build_gated, gate_bank
from kdsearch.search.search import GatedSearch, kl_to_teacher
from kdsearch.search.select import LANDING, select_to_budget, smallest_macs
from kdsearch.student.extract import Selection, extract_student
from kdsearch.student.spec import make_spec, student_state


@dataclass
class SearchResult:
    student: fx.GraphModule
    spec: dict
    summary: dict
    selection: Selection


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def search_student(teacher: nn.Module, teacher_name: str, dataset: ImageDataset, budget: str,
                   config: SearchConfig, constraints: Constraints, out_dir: str | Path,
                   seed: int = 0, progress: bool = True, resume: bool = False) -> SearchResult:
    """Run the search and write summary.json, student.json, student.pt, graph.json and
    search_log.jsonl into ``out_dir``.

    ``search_checkpoint.pt`` is written every ``config.checkpoint_every`` steps, after the
    last step and on SIGINT/SIGTERM (then :class:`SearchInterrupted` is raised);
    ``resume=True`` continues from it exactly. Without ``resume`` an existing checkpoint is a
    :class:`KdsearchError`. summary.json is written last: a run stopped early has none.
    """
    out = ensure_out_dir(out_dir)
    if not resume:
        refuse_unfinished(out / CHECKPOINT)  # before any work or write
    start = time.perf_counter()
    torch.manual_seed(seed)
    teacher_info = {"model": portable_name(teacher_name), "num_classes": dataset.num_classes,
                    "input_size": list(dataset.input_size)}
    topology = TopologyGraph(teacher, dataset.input_size, constraints)
    write_json(out / "graph.json", topology.to_json())
    units, mac_model = topology.units, MacModel(topology.units, topology.macs_per_node)
    budget_macs = _checked_budget(budget, topology, teacher_info, units, mac_model, constraints)
    if not units.searchable():
        raise KdsearchError(f"{teacher_name} has no searchable unit under these constraints")

    device = resolve_device(config.device)
    gated = build_gated(topology.gm, units).to(device)
    search = GatedSearch(gated, teacher.to(device), mac_model, budget_macs, config)
    batches = dataset_batches(dataset, "train", config.batch_size, device, seed=seed)
    log_path = out / "search_log.jsonl"
    settings = resume_settings(teacher_name, dataset, budget_macs, seed, asdict(config),
                               asdict(constraints))
    done = restore(out / CHECKPOINT, log_path, search, settings, resume)
    checkpoints = SearchCheckpoints(out / CHECKPOINT, search, settings,
                                    config.checkpoint_every, saved_step=done)
    with StopSignals() as stop:
        search.run(batches, log=lambda s: append_jsonl(log_path, asdict(s)),
                   progress=progress, start=done, checkpoints=checkpoints, stop=stop)

    bank = gate_bank(gated)
    # the penalty already weighs every gate by its MACs, so the gates rank by value alone
    selection, report = select_to_budget(units, mac_model, dict(bank.gates), budget_macs,
                                         constraints, search.last_alive, per_mac=False)
    harden_gates(bank.gates, selection)
    student = extract_student(gated.cpu(), units, selection).eval()
    teacher.cpu()
    counted = count_model(student, dataset.input_size)
    if counted.macs != report.macs:
        raise RuntimeError(f"internal error: predicted {report.macs} MACs, counted "
                           f"{counted.macs}")
    student_kl = _test_kl(student, teacher, dataset)
    spec = make_spec(teacher_info, units, selection, counted.macs, counted.params)
    summary = _summary(teacher, topology, units, selection, report, counted, budget,
                       budget_macs, search, student_kl, config, constraints, seed,
                       time.perf_counter() - start)
    write_json(out / "student.json", spec)
    save_torch(out / "student.pt", student_state(student))
    write_json(out / "summary.json", summary)
    (out / CHECKPOINT).unlink(missing_ok=True)  # finished: the run needs no resume
    return SearchResult(student, spec, summary, selection)


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
        for uid, gate in gates.items():
            if uid in selection.removed_blocks:
                gate.zero_()
            elif uid in selection.kept:
                mask = torch.zeros_like(gate, dtype=torch.bool)
                mask[selection.kept[uid]] = True
                gate.masked_fill_(~mask, 0.0)


@torch.no_grad()
def _test_kl(student: nn.Module, teacher: nn.Module, dataset: ImageDataset) -> float:
    """Mean T=1 KL(teacher || student) over the test split (eval mode, no augmentation)."""
    teacher.eval()
    total, count = 0.0, 0
    for images, _ in dataset_batches(dataset, "test", 256, "cpu"):
        kl = kl_to_teacher(student(images), teacher(images), temperature=1.0)
        total += float(kl) * len(images)
        count += len(images)
    return total / max(count, 1)


def _summary(teacher, topology, units, selection, report, counted, budget, budget_macs,
             search, student_kl, config, constraints, seed, seconds) -> dict:
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
        "search": {"steps": config.steps, "final_kl": search.last_kl,
                   "final_lambda": search.lam if search.last_kl is not None else None,
                   "seconds": round(seconds, 2)},
        "student_test_kl": round(student_kl, 5),
        "search_seconds": round(seconds, 2),
        "config": asdict(config),
        "constraints": asdict(constraints),
        "seed": seed,
    }
