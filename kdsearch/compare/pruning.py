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
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Selection, Units
from kdsearch.search.cost import MacModel
from kdsearch.search.select import SelectionReport, select_to_budget, smallest_macs
from kdsearch.student.extract import extract_student


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
