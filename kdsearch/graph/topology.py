"""The teacher's topology graph: layers and ops as a networkx DiGraph, with its units.

Nodes are the traced graph's nodes (named as torch.fx names them) with attributes ``op``
(placeholder, call_module, call_function, call_method, get_attr, output), ``kind`` (module
class or function name), ``target`` (module path or function), ``shape`` (output shape, batch
1), ``macs`` and ``params``. ``graph.graph["units"]`` lists the searchable units.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch.fx as fx
import torch.nn as nn

from kdsearch.graph.counting import count_macs, node_params
from kdsearch.graph.trace import example_input_for, output_shape, trace_with_shapes
from kdsearch.graph.units import BlockUnit, ChannelUnit, Constraints, Units, find_units

GRAPH_FORMAT = "kdsearch-graph/1"


class TopologyGraph:
    """Trace ``model`` at ``input_size`` and find its searchable units.

    >>> g = TopologyGraph(build_model("resnet20"), (3, 32, 32))
    >>> g.graph.nodes["layer1_0_conv1"]["macs"]
    2359296
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int],
                 constraints: Constraints | None = None):
        self.input_size = tuple(input_size)
        self.gm: fx.GraphModule = trace_with_shapes(model, example_input_for(self.input_size))
        self.macs_per_node = count_macs(self.gm)
        self.units: Units = find_units(self.gm, self.macs_per_node, constraints)
        self.graph = _to_networkx(self.gm, self.macs_per_node, self.units)

    @property
    def macs(self) -> int:
        return sum(self.macs_per_node.values())

    def to_json(self) -> dict[str, Any]:
        data = nx.node_link_data(self.graph, edges="edges")
        return {"format": GRAPH_FORMAT, "input_size": list(self.input_size), **data}

    @staticmethod
    def from_json(data: dict[str, Any]) -> nx.DiGraph:
        """The networkx graph (with ``graph["units"]``) saved by :meth:`to_json`."""
        payload = {k: v for k, v in data.items() if k not in ("format", "input_size")}
        return nx.node_link_graph(payload, edges="edges")


def _to_networkx(gm: fx.GraphModule, macs: dict[str, int], units: Units) -> nx.DiGraph:
    graph = nx.DiGraph(units=[unit_record(u) for u in [*units.channels, *units.blocks]])
    for node in gm.graph.nodes:
        shape = output_shape(node)
        graph.add_node(node.name, op=node.op, kind=_kind(gm, node), target=_target(node),
                       shape=list(shape) if shape else None, macs=macs.get(node.name, 0),
                       params=node_params(gm, node))
        for source in node.all_input_nodes:
            graph.add_edge(source.name, node.name)
    return graph


def unit_record(unit: ChannelUnit | BlockUnit) -> dict[str, Any]:
    """A unit as plain JSON data."""
    record = {"id": unit.id, "kind": unit.kind, "label": unit.label, "size": unit.size,
              "macs": unit.macs, "searchable": unit.searchable, "reason": unit.reason}
    if isinstance(unit, ChannelUnit):
        record.update(producers=unit.producers, consumers=unit.consumers,
                      members=unit.members)
    else:
        record.update(add=unit.branch.add, skip=unit.branch.skip,
                      nodes=list(unit.branch.nodes))
    return record


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target) if node.op == "call_method" else node.op


def _target(node: fx.Node) -> str:
    target = node.target
    if callable(target):
        module = getattr(target, "__module__", None) or ""
        return f"{module}.{getattr(target, '__name__', target)}".lstrip(".")
    return str(target)
