"""The magnitude-pruning baseline: keep the filters with the largest L1 norm, at a MAC budget.

This is the criterion most pruning tools start from (Li et al., "Pruning Filters for
Efficient ConvNets", 2017; Torch-Pruning's ``MagnitudeImportance(p=1)``), built from
kdsearch's own parts so that only the choice of channels differs from the search:

1. the teacher's channel units come from :class:`~kdsearch.graph.topology.TopologyGraph`
   (channels only: residual blocks are never removed);
2. each channel of a unit scores the L1 norm of the filters producing it, summed over the
   unit's producer convs/linears (channels tied by a residual add are produced by several),
   divided by the unit's mean score (so units compare on one scale, as Torch-Pruning's
   default ``normalizer="mean"``);
3. :func:`~kdsearch.search.select.select_to_budget` takes the scores as gate values and
   lands in [97%, 100%] of the budget, removing the lowest-scoring channels first across
   all layers (a global L1 ranking, as Torch-Pruning's global mode; ``per_mac=False``);
4. :func:`~kdsearch.student.extract.extract_student` cuts the kept channels out.

The comparison retrains the result from scratch (fresh initialisation) like every other
student, so what is compared is the architecture the L1 criterion chooses.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Selection, Units
from kdsearch.io import ensure_out_dir, save_torch, write_json
from kdsearch.search.budget import parse_budget
from kdsearch.search.cost import MacModel
from kdsearch.search.select import SelectionReport, select_to_budget, smallest_macs
from kdsearch.student.extract import extract_student
from kdsearch.student.spec import make_spec, student_state


@dataclass
class PruneResult:
    student: fx.GraphModule
    selection: Selection
    report: SelectionReport
    scores: dict[str, torch.Tensor]  # normalised L1 score per channel, per searchable unit
    topology: TopologyGraph


def l1_channel_scores(gm: fx.GraphModule, units: Units) -> dict[str, torch.Tensor]:
    """Per searchable channel unit: the L1 norm of each channel's producing filters (summed
    over the unit's producers), divided by the unit's mean."""
    nodes = {node.name: node for node in gm.graph.nodes}
    scores = {}
    for unit in units.channels:
        if not unit.searchable:
            continue
        total = torch.zeros(unit.size)
        for name in unit.producers:
            weight = gm.get_submodule(nodes[name].target).weight.detach()
            total += weight.abs().flatten(1).sum(1).float().cpu()  # [out, ...] -> [out]
        mean = float(total.mean())
        scores[unit.id] = total / mean if mean > 0 else torch.ones(unit.size)
    return scores


def magnitude_prune(model: nn.Module, input_size: tuple[int, int, int], budget_macs: int,
                    constraints: Constraints | None = None) -> PruneResult:
    """Prune ``model``'s channels by L1 norm to within [97%, 100%] of ``budget_macs``.

    ``constraints`` (fewest channels, channel multiple, kept modules) apply as in the search;
    block removal is always off. The returned student keeps the pruned weights.
    """
    constraints = dataclasses.replace(constraints or Constraints(), unit_kinds=("channels",))
    topology = TopologyGraph(model, input_size, constraints)
    units = topology.units
    mac_model = MacModel(units, topology.macs_per_node)
    if not units.searchable():
        raise KdsearchError("the teacher has no prunable channel unit under these constraints")
    floor = smallest_macs(units, mac_model, constraints)
    if not floor <= budget_macs < topology.macs:
        raise KdsearchError(f"pruning budget {budget_macs / 1e6:.3f}M MACs is outside what "
                            f"channel pruning reaches ({floor / 1e6:.3f}M to "
                            f"{topology.macs / 1e6:.3f}M MACs)")
    scores = l1_channel_scores(topology.gm, units)
    selection, report = select_to_budget(units, mac_model, scores, budget_macs, constraints,
                                         per_mac=False)
    student = extract_student(topology.gm, units, selection).eval()
    return PruneResult(student, selection, report, scores, topology)


def prune_student(teacher: nn.Module, teacher_name: str, num_classes: int,
                  input_size: tuple[int, int, int], budget: str, constraints: Constraints,
                  out_dir: str | Path) -> dict:
    """Prune at ``budget`` (``like:NAME``, ``0.5x``, ``41M``) and write ``student.json``,
    ``student.pt`` and ``summary.json`` into ``out_dir`` (as ``kdsearch search`` does);
    return the summary."""
    out = ensure_out_dir(out_dir)
    start = time.perf_counter()
    teacher_macs = count_model(teacher, input_size).macs

    def macs_of_model(name: str) -> int:
        from kdsearch.models import build_model

        return count_model(build_model(name, num_classes, input_size[0]), input_size).macs

    budget_macs = parse_budget(budget, teacher_macs, macs_of_model)
    result = magnitude_prune(teacher.cpu(), input_size, budget_macs, constraints)
    counted = count_model(result.student, input_size)
    if counted.macs != result.report.macs:
        raise RuntimeError(f"internal error: predicted {result.report.macs} MACs, counted "
                           f"{counted.macs}")
    info = {"model": teacher_name, "num_classes": num_classes, "input_size": list(input_size)}
    spec = make_spec(info, result.topology.units, result.selection, counted.macs,
                     counted.params)
    summary = {
        "criterion": "L1 norm of producing filters, normalised by the unit mean",
        "teacher": {"macs": teacher_macs},
        "student": {"macs": counted.macs, "params": counted.params},
        "budget": budget, "budget_macs": budget_macs,
        "budget_fraction": round(counted.macs / budget_macs, 4),
        "channels_kept": {uid: len(k) for uid, k in result.selection.kept.items()},
        "constraints": {**dataclasses.asdict(constraints), "unit_kinds": ["channels"]},
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(out / "student.json", spec)
    save_torch(out / "student.pt", student_state(result.student))
    write_json(out / "summary.json", summary)
    return summary
