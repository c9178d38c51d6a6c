"""Recurrent students (Pintea, Liu & van Gemert, ICIP 2018): residual blocks share conv weights.

Residual blocks of one spatial scale with identical conv shapes become one recurrent block
unrolled over the blocks: their convs use the same weights, so parameters shrink while the
unrolled depth, and hence the MACs, stay the same. Only conv weights (and biases) are
shared; every unrolled step keeps its own BatchNorm (sharing BN cost the paper accuracy).

The blocks are found on the traced graph, so zoo models and searched students
(``fx.GraphModule``) work alike: a *recurrent block* is a residual branch with an identity
skip (:func:`~kdsearch.graph.blocks.find_residual_branches`); blocks with a projection
shortcut (the first block of a stage, which changes resolution or width) stay unshared, as
the paper's non-shared conv between scales. Three tyings, for a stage of ``n`` blocks of
``k`` convs each (``k = 2`` for basic blocks, executed as ``c_1 .. c_2n``):

* ``interleaved`` (the paper's choice for all later results): the whole block recurs,
  conv ``i`` of every block is conv ``i`` of the first one: ``W1 W2 W1 W2 ...``;
* ``sequential``: one weight for the first ``n`` convs executed, another for the last ``n``
  (``W1`` for steps ``1..n``, ``W2`` for ``n+1..2n``): ``c_1..c_n`` share, ``c_n+1..c_2n``
  share, with the blocks' BN/ReLU/skip structure unchanged. With ``k`` convs per block the
  ``k n`` convs split into ``k`` runs of ``n``; inside a run, convs of equal shape share;
* ``single``: one weight for all convs of equal shape at that resolution (any block, even
  a stage with one block, whose two convs then share).

Blocks are grouped by resolution and the shapes of their convs (plus stride, padding,
dilation, groups), so blocks that the search narrowed differently stay apart.

Sharing is the same ``nn.Parameter`` object assigned to several conv modules:
``parameters()`` lists it once (so the optimiser steps it once, and weight decay applies
once) and autograd sums the gradients of every use. ``state_dict()`` still holds every key
(the shared tensor under each name), so a recurrent student's weights load into the plain
model too. ``load_state_dict`` copies into the existing parameters in place, so a tied
model stays tied after loading (if the saved copies differed, the last key wins). A plain
model that loaded tied weights is re-tied, without changing any output, by calling
:func:`make_recurrent` with the same tying (before or after loading: both give the same
model). ``deepcopy`` keeps the ties, and so does ``.to(...)``, which updates parameters in
place (tested for dtype and memory-format changes on CPU; device moves take the same path
in PyTorch, but were not tested here on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.graph.blocks import find_residual_branches
from kdsearch.graph.counting import count_model
from kdsearch.graph.trace import example_input_for, output_shape, trace_with_shapes

TYINGS = ("interleaved", "sequential", "single")


@dataclass(frozen=True)
class RecurrentStage:
    """Identity-skip residual blocks at one resolution: each block's convs in execution order."""

    resolution: tuple[int, int]
    blocks: tuple[tuple[str, ...], ...]  # module paths of each block's convs


def make_recurrent(model: nn.Module, input_size: tuple[int, int, int],
                   tying: str = "interleaved") -> nn.Module:
    """Tie ``model``'s conv weights across its residual blocks, in place; returns ``model``.

    ``input_size`` is ``(C, H, W)``; ``tying`` is one of :data:`TYINGS` (see the module
    docstring). A model without blocks to tie is returned unchanged
    (:func:`tied_convs` tells what was tied).
    """
    for paths in tie_plan(model, input_size, tying):
        share_weights([model.get_submodule(path) for path in paths])
    return model


def tie_plan(model: nn.Module, input_size: tuple[int, int, int],
             tying: str = "interleaved") -> list[tuple[str, ...]]:
    """Classes of conv module paths that will share one weight (the first one's)."""
    if tying not in TYINGS:
        raise KdsearchError(f"unknown tying {tying!r} (choose from {', '.join(TYINGS)})")
    stages = recurrent_stages(model, input_size)
    plan = {"interleaved": _interleaved, "sequential": _sequential, "single": _single}[tying]
    classes = [tuple(c) for stage in stages for c in plan(model, stage)]
    return [c for c in classes if len(c) > 1]


def recurrent_stages(model: nn.Module, input_size: tuple[int, int, int]) -> list[RecurrentStage]:
    """Identity-skip residual blocks of ``model``, grouped by resolution, in graph order."""
    gm = trace_with_shapes(model, example_input_for(input_size))
    calls = _conv_calls(gm)
    nodes = {node.name: node for node in gm.graph.nodes}
    by_resolution: dict[tuple[int, int], list[tuple[str, ...]]] = {}
    for branch in find_residual_branches(gm):
        shape = output_shape(nodes[branch.add])
        convs = [nodes[n].target for n in branch.nodes
                 if nodes[n].op == "call_module" and nodes[n].target in calls]
        if len(shape) == 4 and convs and all(calls[c] == 1 for c in convs):
            by_resolution.setdefault(tuple(shape[2:]), []).append(tuple(convs))
    return [RecurrentStage(res, tuple(blocks)) for res, blocks in by_resolution.items()]


def _conv_calls(gm: fx.GraphModule) -> dict[str, int]:
    """How often each ``nn.Conv2d`` module is called (a module called twice is not tied)."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Conv2d):
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def conv_signature(conv: nn.Conv2d) -> tuple:
    """What must be equal for two convs to share a weight: shape and how it is applied."""
    return (tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation, conv.groups,
            conv.padding_mode, conv.bias is not None)


def _signature_groups(model: nn.Module, blocks) -> list[list[tuple[str, ...]]]:
    """``blocks`` split into runs of equal conv signatures (order kept)."""
    groups: dict[tuple, list[tuple[str, ...]]] = {}
    for block in blocks:
        key = tuple(conv_signature(model.get_submodule(p)) for p in block)
        groups.setdefault(key, []).append(block)
    return list(groups.values())


def _interleaved(model: nn.Module, stage: RecurrentStage) -> list[list[str]]:
    """Conv ``i`` of every block of one signature shares block 0's conv ``i``."""
    return [[block[i] for block in blocks]
            for blocks in _signature_groups(model, stage.blocks) for i in range(len(blocks[0]))]


def _sequential(model: nn.Module, stage: RecurrentStage) -> list[list[str]]:
    """``n`` equal blocks of ``k`` convs: ``k`` runs of ``n`` convs; equal shapes in a run share."""
    classes = []
    for blocks in _signature_groups(model, stage.blocks):
        n, order = len(blocks), [path for block in blocks for path in block]
        for start in range(0, len(order), n):
            classes += _by_signature(model, order[start:start + n])
    return classes


def _single(model: nn.Module, stage: RecurrentStage) -> list[list[str]]:
    """Every conv of one signature at this resolution shares one weight."""
    return _by_signature(model, [path for block in stage.blocks for path in block])


def _by_signature(model: nn.Module, paths: list[str]) -> list[list[str]]:
    classes: dict[tuple, list[str]] = {}
    for path in paths:
        classes.setdefault(conv_signature(model.get_submodule(path)), []).append(path)
    return list(classes.values())


def share_weights(convs: list[nn.Conv2d]) -> None:
    """Give every conv the first one's weight (and bias) ``nn.Parameter`` object."""
    owner = convs[0]
    for conv in convs[1:]:
        conv.weight = owner.weight
        if owner.bias is not None:
            conv.bias = owner.bias


def tied_convs(model: nn.Module) -> list[list[str]]:
    """Names of conv modules that share one weight parameter, one list per shared weight."""
    users: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            users.setdefault(id(module.weight), []).append(name)
    return [names for names in users.values() if len(names) > 1]


def recurrence_report(model_before: nn.Module, model_after: nn.Module,
                      input_size: tuple[int, int, int]) -> dict[str, Any]:
    """Params (each shared parameter counted once) and MACs of a model before and after.

    ``model_before`` must be an untied copy (``make_recurrent`` works in place, so copy
    first). MACs count every unrolled use of a shared conv, so they do not change.
    """
    before, after = count_model(model_before, input_size), count_model(model_after, input_size)
    return {
        "params_before": before.params,
        "params_after": after.params,
        "params_saved": before.params - after.params,
        "macs_before": before.macs,
        "macs_after": after.macs,
        "tied": tied_convs(model_after),
    }
