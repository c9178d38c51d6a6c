"""Cut the kept subgraph out of the (gated) teacher as a standalone, smaller network.

Given which channels each channel unit keeps and which residual blocks are removed:

1. removed blocks are bypassed (``y = x + f(x)`` becomes ``y = x``) and their layers deleted;
2. every conv, linear, BatchNorm, depthwise conv and per-channel parameter touching a
   unit is physically sliced to the kept channels.

Extraction never sees a gate: a gated network is first folded into a plain one
(:func:`kdsearch.search.gates.fold_gates`); with the removed gates at 0, the result computes
exactly what the gated network computes.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.graph.channels import Layout
from kdsearch.graph.units import Selection, Units


def extract_student(gm: fx.GraphModule, units: Units, selection: Selection) -> fx.GraphModule:
    """A new GraphModule with the selection applied (``gm`` is not modified)."""
    student = copy.deepcopy(gm)
    nodes = {n.name: n for n in student.graph.nodes}
    _remove_blocks(student, nodes, units, selection.removed_blocks)
    student.graph.eliminate_dead_code()
    _slice_modules(student, units, selection)
    student.delete_all_unused_submodules()
    student.graph.lint()
    student.recompile()
    return student


def _remove_blocks(gm: fx.GraphModule, nodes: dict[str, fx.Node], units: Units,
                   removed: set[str]) -> None:
    """Replace each removed block's add by its skip input (in graph order: chains resolve)."""
    replaced: dict[str, fx.Node] = {}
    for block in units.blocks:  # units are listed in graph order
        if block.id in removed:
            add = nodes[block.branch.add]
            skip = replaced.get(block.branch.skip, nodes[block.branch.skip])
            add.replace_all_uses_with(skip)
            gm.graph.erase_node(add)
            replaced[add.name] = skip


# -- slicing ----------------------------------------------------------------------------------
def _slice_modules(gm: fx.GraphModule, units: Units, selection: Selection) -> None:
    records = units.records
    unit_of_space = units.unit_of_space()
    alive = {n.name: n for n in gm.graph.nodes}

    def kept_of_space(space: int, length: int) -> torch.Tensor:
        unit = unit_of_space.get(space)
        if unit is not None and unit.id in selection.kept:
            return torch.tensor(selection.kept[unit.id], dtype=torch.long)
        return torch.arange(length)

    def elements(layout: Layout) -> torch.Tensor:
        parts, offset = [], 0
        for space, length in layout.segments:
            parts.append(kept_of_space(space, length) + offset)
            offset += length
        channels = torch.cat(parts)
        if layout.repeat == 1:
            return channels
        r = layout.repeat
        return (channels[:, None] * r + torch.arange(r)[None, :]).reshape(-1)

    for name, space in records.producers.items():
        if name in alive:
            size = records.sizes[space]
            _slice_out(gm.get_submodule(alive[name].target), kept_of_space(space, size))
    for name, layout in records.consumers.items():
        if name in alive:
            _slice_in(gm.get_submodule(alive[name].target), elements(layout))
    for name, layout in records.members.items():
        if name in alive:
            _slice_channelwise(gm.get_submodule(alive[name].target), elements(layout))
    for name, (axis, layout) in records.param_members.items():
        if name in alive:
            _slice_attribute(gm, alive[name].target, axis, elements(layout))


def _take(tensor: torch.Tensor | None, index: torch.Tensor, dim: int = 0):
    if tensor is None or tensor.shape[dim] == index.numel():
        return tensor
    taken = tensor.detach().index_select(dim, index).clone()
    return nn.Parameter(taken, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else taken


def _slice_out(layer: nn.Module, index: torch.Tensor) -> None:
    if index.numel() == layer.weight.shape[0]:
        return
    layer.weight = _take(layer.weight, index)
    layer.bias = _take(layer.bias, index)
    _set_width(layer, out=index.numel())


def _slice_in(layer: nn.Module, index: torch.Tensor) -> None:
    layer.weight = _take(layer.weight, index, dim=1)
    _set_width(layer, inp=index.numel())


def _slice_channelwise(layer: nn.Module, index: torch.Tensor) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(layer, attr, None)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            setattr(layer, attr, _take(value, index))
    if isinstance(layer, nn.Conv2d | nn.Conv1d | nn.Conv3d):  # depthwise
        _set_width(layer, inp=index.numel(), out=index.numel())
        layer.groups = index.numel()
    elif hasattr(layer, "num_features"):
        layer.num_features = index.numel()
    elif hasattr(layer, "num_parameters"):
        layer.num_parameters = index.numel()


def _slice_attribute(gm: fx.GraphModule, target: str, axis: int, index: torch.Tensor) -> None:
    owner_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    setattr(owner, attr, _take(getattr(owner, attr), index, dim=axis))


def _set_width(layer: nn.Module, inp: int | None = None, out: int | None = None) -> None:
    for attr, value in (("in_channels", inp), ("in_features", inp),
                        ("out_channels", out), ("out_features", out)):
        if value is not None and hasattr(layer, attr):
            setattr(layer, attr, value)
