"""Scale transfer: the L1 penalty on the gates cannot be dodged by growing the weights.

A gate ``g`` multiplies what a conv or linear layer reads (or what a residual branch adds),
so ``g * W`` is all the network sees: shrinking every gate while the weights that read them
grow costs the KL nothing, and the penalty shrinks without selecting anything (Ye et al.,
ICLR 2018). After each step, :class:`ScaleTransfer` moves each gate element's scale back
from the weights into the gate: with ``s`` the norm of the weights reading that element
(over every layer that reads it) divided by their norm in the teacher,
``g <- min(g * s, 1)`` and those weights are divided by the same factor. The network computes
exactly what it computed before (the product is unchanged), but a gate now carries the
element's whole scale, so only a gate that matters can stay large.

Units read by a layer whose input scale is not free (a BatchNorm reading the gated tensor,
a grouped convolution) are left out; a residual block's scale lives in the affine layer
that ends its branch.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.graph.channels import NORM_MODULES
from kdsearch.search.gates import GATES_ATTR, GateBank

Columns = list[tuple[nn.Parameter, torch.Tensor]]  # (weight, input columns per gate element)


class ScaleTransfer:
    """Per gated unit, the parameters that carry its scale; :meth:`apply` moves it."""

    def __init__(self, gated: fx.GraphModule, bank: GateBank):
        self.columns: dict[str, Columns] = {}  # channel unit -> weights reading it
        self.branch_ends: dict[str, list[nn.Parameter]] = {}  # block -> weight, bias
        excluded: set[str] = set()
        for node in gated.graph.nodes:
            if node.op == "call_module" and node.target == GATES_ATTR:
                self._index(gated, bank, node, excluded)
        for uid in excluded:
            self.columns.pop(uid, None)
            self.branch_ends.pop(uid, None)
        self.reference = {uid: self._squares(uid) for uid in self.units}

    @property
    def units(self) -> list[str]:
        return [*self.columns, *self.branch_ends]

    def _index(self, gated: fx.GraphModule, bank: GateBank, node: fx.Node,
               excluded: set[str]) -> None:
        dim, repeat, segments = bank.sites[node.kwargs["site"]]
        if dim < 0:  # a block gate on the branch's output
            (uid, _), = segments
            source = node.args[0]
            layer = gated.get_submodule(source.target) if source.op == "call_module" else None
            affine = (*NORM_MODULES, nn.Conv2d, nn.Linear)
            if isinstance(layer, affine) and layer.weight is not None:
                self.branch_ends[uid] = [p for p in (layer.weight, layer.bias) if p is not None]
            else:
                excluded.add(uid)
            return
        (consumer,) = node.users
        layer = gated.get_submodule(consumer.target) if consumer.op == "call_module" else None
        plain = isinstance(layer, nn.Linear) or (
            isinstance(layer, nn.Conv2d) and layer.groups == 1)
        offset = 0
        for uid, length in segments:
            if uid is not None:
                if plain:
                    start = torch.arange(offset, offset + length) * repeat
                    columns = start[:, None] + torch.arange(repeat)[None, :]  # [length, repeat]
                    self.columns.setdefault(uid, []).append((layer.weight, columns))
                else:
                    excluded.add(uid)
            offset += length

    def _squares(self, uid: str) -> torch.Tensor:
        """Per gate element of ``uid``: the summed squares of the parameters carrying it."""
        with torch.no_grad():
            if uid in self.branch_ends:
                return sum(p.detach().float().square().sum() for p in self.branch_ends[uid]
                           ).reshape(1)
            total = None
            for weight, columns in self.columns[uid]:
                per_input = weight.detach().float().transpose(0, 1).flatten(1).square().sum(1)
                part = per_input[columns.to(per_input.device)].sum(1)
                total = part if total is None else total + part
            return total

    @torch.no_grad()
    def apply(self, gates: nn.ParameterDict, optimizer: torch.optim.Optimizer) -> None:
        """Move each element's scale from its weights (and their momentum) into its gate."""
        for uid in self.units:
            gate = gates[uid]
            now, reference = self._squares(uid), self.reference[uid].to(gate.device)
            scale = (now / reference.clamp_min(1e-30)).sqrt().to(gate.dtype)
            live = gate > 0
            moved = torch.where(live, (gate * scale).clamp(max=1.0), gate)
            factor = torch.where(live, moved / gate.clamp_min(1e-30), torch.ones_like(gate))
            gate.copy_(moved)
            for parameter, columns in self._carriers(uid):
                divide(parameter, columns, factor, optimizer)

    def _carriers(self, uid: str):
        if uid in self.branch_ends:
            return [(p, None) for p in self.branch_ends[uid]]
        return self.columns[uid]


def divide(parameter: nn.Parameter, columns: torch.Tensor | None, factor: torch.Tensor,
           optimizer: torch.optim.Optimizer) -> None:
    """``parameter`` (all of it, or its input ``columns``) and its momentum divided by
    ``factor`` (one value per gate element)."""
    tensors = [parameter.data]
    buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
    if buffer is not None:
        tensors.append(buffer)
    for tensor in tensors:
        if columns is None:
            tensor.div_(factor.to(tensor.dtype))
            continue
        index = columns.to(tensor.device).reshape(-1)
        per_column = factor.repeat_interleave(columns.shape[1]).to(tensor.dtype)
        shape = [1, -1] + [1] * (tensor.dim() - 2)
        tensor[:, index] = tensor[:, index] / per_column.view(shape)
