"""The ``depgraph`` control: DepGraph group-norm importance from the Torch-Pruning library.

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023) builds its
own dependency graph of the teacher and scores every channel of a coupled group by the
group's L2 norm (``GroupMagnitudeImportance(p=2)``: the norms of every parameter slice the
channel touches, averaged over the group and divided by the group's mean). The library runs
as is, as an optional extra (``pip install "kdsearch[pruning]"``); kdsearch maps each of its
channel units to the DepGraph group of the unit's first producer, takes the library's scores,
and lands them in the budget with the same global ranking as every other control
(``select_to_budget``), so the MACs are counted by kdsearch's counter.
"""

from __future__ import annotations

import torch

from kdsearch.compare.baselines import register_control
from kdsearch.errors import KdsearchError
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Selection
from kdsearch.search.cost import MacModel
from kdsearch.search.select import SelectionReport, select_to_budget


def depgraph_scores(topology: TopologyGraph) -> dict[str, torch.Tensor]:
    """Per searchable channel unit: Torch-Pruning's group-norm importance of each channel."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise KdsearchError('the depgraph control needs Torch-Pruning: pip install '
                            '"kdsearch[pruning]"') from None
    model = topology.gm
    example = torch.zeros(1, *topology.input_size)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    nodes = {node.name: node for node in model.graph.nodes}
    scores = {}
    for unit in topology.units.channels:
        if not unit.searchable:
            continue
        layer = model.get_submodule(nodes[unit.producers[0]].target)
        prune = (tp.prune_linear_out_channels if isinstance(layer, torch.nn.Linear)
                 else tp.prune_conv_out_channels)
        group = graph.get_pruning_group(layer, prune, idxs=list(range(unit.size)))
        with torch.no_grad():
            score = importance(group)
        if score is None or score.numel() != unit.size:
            raise KdsearchError(f"Torch-Pruning gave no score for the channels of "
                                f"{unit.producers[0]}")
        scores[unit.id] = score.detach().float().cpu().clamp_min(1e-12)
    return scores


@register_control("depgraph", ("channels",), "Torch-Pruning GroupMagnitudeImportance(p=2) "
                                             "(DepGraph group norm), ranked globally")
def choose_depgraph(topology: TopologyGraph, mac_model: MacModel, budget: int,
                    constraints: Constraints, seed: int) -> tuple[Selection, SelectionReport]:
    return select_to_budget(topology.units, mac_model, depgraph_scores(topology), budget,
                            constraints, per_mac=False)
