"""Gates on a copy of the teacher: channel gates before every consumer, scalar block gates.

The gated network is the teacher's traced graph with one extra node in front of every
layer that reads a searchable channel group (``x * g``, ``g`` broadcast on the channel
axis) and one on every removable residual branch (``branch * g_block``). A channel whose gate
is 0 is then invisible to every layer that reads it, which is exactly what removing it does;
a block whose gate is 0 computes ``y = x``. Gates start at 1 (the gated network equals the
teacher).
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.graph.channels import NORM_MODULES
from kdsearch.graph.units import Units

GATES_ATTR = "kdsearch_gates"


class GateBank(nn.Module):
    """Holds every gate; ``forward(x, site)`` applies the gates of one site to ``x``.

    A site is a (channel axis, repeat, segments) layout: segments name a unit (gated) or
    ``None`` (a fixed channel range, multiplied by 1).
    """

    def __init__(self, unit_sizes: dict[str, int]):
        super().__init__()
        self.gates = nn.ParameterDict({uid: nn.Parameter(torch.ones(n))
                                       for uid, n in unit_sizes.items()})
        self.sites: dict[str, tuple[int, int, tuple[tuple[str | None, int], ...]]] = {}

    def add_site(self, name: str, dim: int, repeat: int, segments) -> str:
        self.sites[name] = (dim, repeat, tuple(segments))
        return name

    def site_vector(self, site: str) -> torch.Tensor:
        """The gate value of every channel element the site's tensor has on its axis."""
        _, repeat, segments = self.sites[site]
        any_gate = next(iter(self.gates.values()))
        parts = [self.gates[uid] if uid else any_gate.new_ones(n) for uid, n in segments]
        vector = torch.cat(parts) if len(parts) > 1 else parts[0]
        return vector.repeat_interleave(repeat) if repeat > 1 else vector

    def forward(self, x: torch.Tensor, site: str) -> torch.Tensor:
        dim = self.sites[site][0]
        shape = [1] * x.dim()
        if dim >= 0:
            shape[dim] = -1
        return x * self.site_vector(site).to(x.dtype).view(shape)


def build_gated(gm: fx.GraphModule, units: Units) -> fx.GraphModule:
    """A deep copy of the traced teacher with gates inserted (gates at 1)."""
    gated = copy.deepcopy(gm)
    searchable = {u.id: u for u in units.searchable()}
    bank = GateBank({uid: u.size for uid, u in searchable.items()})
    gated.add_submodule(GATES_ATTR, bank)
    unit_of_space = {s: u.id for s, u in units.unit_of_space().items() if u.id in searchable}
    nodes = {n.name: n for n in gated.graph.nodes}
    for name, layout in units.records.consumers.items():
        segments = [(unit_of_space.get(s), n) for s, n in layout.segments]
        if any(uid for uid, _ in segments):
            _gate_input(gated, nodes[name], bank.add_site(name, layout.dim, layout.repeat,
                                                          segments))
    for unit in units.blocks:
        if unit.id in searchable:
            out = nodes[unit.branch.output]
            _gate_output(gated, out, bank.add_site(unit.id, -1, 1, [(unit.id, 1)]))
    gated.graph.lint()
    gated.recompile()
    return gated


def _gate_input(gm: fx.GraphModule, consumer: fx.Node, site: str) -> None:
    source = consumer.args[0]
    with gm.graph.inserting_before(consumer):
        gate = gm.graph.call_module(GATES_ATTR, (source,), {"site": site})
    consumer.replace_input_with(source, gate)


def _gate_output(gm: fx.GraphModule, node: fx.Node, site: str) -> None:
    with gm.graph.inserting_after(node):
        gate = gm.graph.call_module(GATES_ATTR, (node,), {"site": site})
    node.replace_all_uses_with(gate, delete_user_cb=lambda user: user is not gate)


def gate_bank(gated: fx.GraphModule) -> GateBank:
    return gated.get_submodule(GATES_ATTR)


# -- folding ------------------------------------------------------------------------------------
def fold_gates(gated: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gated`` without gates: a channel gate scales the input columns of the layer
    that reads it, a block gate the branch's last affine layer (or stays as a constant
    multiply). It computes what ``gated`` computes."""
    gm = copy.deepcopy(gated)
    bank = gate_bank(gm)
    for node in [n for n in gm.graph.nodes if n.op == "call_module" and n.target == GATES_ATTR]:
        site = node.kwargs["site"]
        source = node.args[0]
        with torch.no_grad():
            vector = bank.site_vector(site).detach().clone()
        replacement = source
        if bank.sites[site][0] < 0:
            replacement = _fold_block_gate(gm, node, float(vector[0]))
        else:
            (consumer,) = node.users
            _scale_input_columns(gm.get_submodule(consumer.target), vector)
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
    delattr(gm, GATES_ATTR)
    gm.graph.lint()
    gm.recompile()
    return gm


def _scale_input_columns(layer: nn.Module, vector: torch.Tensor) -> None:
    with torch.no_grad():
        shape = [1, -1] + [1] * (layer.weight.dim() - 2)
        layer.weight.mul_(vector.to(layer.weight.dtype).view(shape))


def _fold_block_gate(gm: fx.GraphModule, gate: fx.Node, value: float) -> fx.Node:
    """Fold a block gate into the branch's last affine layer, else multiply by a constant."""
    output = gate.args[0]
    if value == 1.0:
        return output
    module = gm.get_submodule(output.target) if output.op == "call_module" else None
    if isinstance(module, (*NORM_MODULES, nn.Conv2d, nn.Linear)) and module.weight is not None:
        with torch.no_grad():
            module.weight.mul_(value)
            if module.bias is not None:
                module.bias.mul_(value)
        return output
    with gm.graph.inserting_before(gate):
        return gm.graph.call_function(torch.mul, (output, value))
