"""Feature taps at stage boundaries, found on the traced graph of any model.

A *stage* is a run of layers at one spatial resolution. Its output (the last node at that
resolution before the resolution drops) is a natural feature tap for feature distillation;
it works for zoo models, torchvision models and searched students of arbitrary widths
alike, because it only reads shapes. Stages with a single conv or linear layer (a stem) are
skipped, and so is everything after the global pooling. Within a stage the tap is the last
residual block's output (so the expansion layer of the next stage's first block does not
count); the deepest tap is the final feature map before pooling.

>>> taps = stage_taps(build_model("resnet20"), (3, 32, 32))
>>> [t.node for t in taps]
['layer1_2_relu_1', 'layer2_2_relu_1', 'layer3_2_relu_1']
>>> [t.shape for t in taps]
[(16, 32, 32), (32, 16, 16), (64, 8, 8)]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.graph.counting import count_macs
from kdsearch.graph.trace import example_input_for, output_shape, symbolic_trace, trace_with_shapes

ADDS = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class Tap:
    node: str  # fx node name in a fresh trace of the model
    shape: tuple[int, ...]  # per sample: (C, H, W)


def stage_taps(model: nn.Module, input_size: tuple[int, int, int],
               preact: bool = False) -> list[Tap]:
    """The output of every stage, shallow to deep; ``preact``: the input of a final ReLU."""
    gm = trace_with_shapes(model, example_input_for(input_size))
    macs = count_macs(gm)
    levels: dict[tuple[int, int], list[fx.Node]] = {}
    for node in gm.graph.nodes:
        shape = output_shape(node)
        if node.op in ("placeholder", "output") or shape is None or len(shape) != 4:
            continue
        if shape[2] * shape[3] == 1 and levels:
            break  # global pooling: the head starts here
        levels.setdefault((shape[2], shape[3]), []).append(node)
    stages = list(levels.values())
    if len(stages) > 1 and sum(1 for n in stages[0] if macs.get(n.name)) < 2:
        stages = stages[1:]  # a stem alone at the input resolution is not a stage
    taps = []
    for index, nodes in enumerate(stages):
        last = nodes[-1] if index == len(stages) - 1 else _block_output(gm, nodes)
        if preact and _is_relu(gm, last):
            last = last.args[0]
        taps.append(Tap(last.name, tuple(output_shape(last)[1:])))
    return taps


def _block_output(gm: fx.GraphModule, nodes: list[fx.Node]) -> fx.Node:
    """The last residual block's output at a resolution (the add, or the ReLU right after
    it); without residual adds, the last node at that resolution."""
    adds = [n for n in nodes if n.op == "call_function" and n.target in ADDS]
    if not adds:
        return nodes[-1]
    last = adds[-1]
    users = list(last.users)
    return users[0] if len(users) == 1 and _is_relu(gm, users[0]) else last


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    return (node.op == "call_function" and node.target in (F.relu, torch.relu)) or (
        node.op == "call_method" and node.target in ("relu", "relu_"))


class WithFeatures(nn.Module):
    """``forward(x) -> (logits, [features at taps])``; shares its modules with ``model``."""

    def __init__(self, model: nn.Module, taps: list[Tap]):
        super().__init__()
        gm = symbolic_trace(model)
        nodes = {n.name: n for n in gm.graph.nodes}
        output = next(n for n in gm.graph.nodes if n.op == "output")
        logits = output.args[0]
        gm.graph.erase_node(output)
        features = [_safe_from_inplace(gm, nodes[t.node]) for t in taps]
        gm.graph.output((logits, features))
        gm.recompile()
        self.graph_module = gm

    def forward(self, x: torch.Tensor):
        return self.graph_module(x)


def _safe_from_inplace(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The tapped value, cloned if a later in-place op (``ReLU(inplace=True)``) would
    overwrite it."""
    if not any(_is_inplace(gm, user) for user in node.users):
        return node
    with gm.graph.inserting_after(node):
        return gm.graph.call_method("clone", (node,))


def _is_inplace(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    return bool(node.kwargs.get("inplace", False))


def head_after(model: nn.Module, tap: Tap) -> fx.GraphModule:
    """The part of ``model`` after ``tap`` as a module: ``head(feature_map) -> logits``.

    Used to classify a student's feature map with the teacher's own head (shared
    classifier). Shares its modules with ``model``.
    """
    gm = symbolic_trace(model)
    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    start = False
    for node in gm.graph.nodes:
        if node.name == tap.node:
            env[node] = head.placeholder("feature_map")
            start = True
        elif node.op == "get_attr" or (start and all(a in env for a in node.all_input_nodes)):
            env[node] = head.node_copy(node, env.__getitem__)
    if not start or not any(n.op == "output" for n in head.nodes):
        raise ValueError(f"the output of {type(model).__name__} does not depend on "
                         f"{tap.node} alone")
    return fx.GraphModule(gm, head, "Head")
