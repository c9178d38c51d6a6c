"""Count MACs, FLOPs and parameters, per node of the traced graph.

What each number counts (per input sample):

- ``macs``: multiply-accumulates of convolution and linear layers (modules and their
  functional forms), what knowledge-distillation and pruning papers call "FLOPs". A conv
  output element costs ``in_channels / groups * prod(kernel)`` MACs; a linear output element
  ``in_features``. Normalisation, activations, pooling and additions are not counted.
- ``flops``: everything :class:`torch.utils.flop_counter.FlopCounterMode` counts (it counts
  a multiply-accumulate as 2 FLOPs; for plain CNNs this is 2 * macs).
- ``params``: number of elements of all learnable parameters (buffers such as BatchNorm
  running statistics are not counted).

Rules are registered per module type (:func:`register_mac_rule`) so custom layers can be
counted too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.graph.trace import example_input_for, output_shape, trace_with_shapes

MacRule = Callable[[nn.Module, fx.Node], int]
MODULE_MAC_RULES: dict[type[nn.Module], MacRule] = {}


def register_mac_rule(*module_types: type[nn.Module]) -> Callable[[MacRule], MacRule]:
    """Decorator: ``rule(module, node) -> MACs per sample`` for nodes calling these modules."""

    def add(rule: MacRule) -> MacRule:
        for module_type in module_types:
            MODULE_MAC_RULES[module_type] = rule
        return rule

    return add


def _per_sample_numel(node: fx.Node) -> int:
    shape = output_shape(node)
    return math.prod(shape[1:]) if shape else 0


@register_mac_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv_macs(conv: nn.Conv2d, node: fx.Node) -> int:
    return _per_sample_numel(node) * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


@register_mac_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose_macs(conv: nn.ConvTranspose2d, node: fx.Node) -> int:
    input_numel = _per_sample_numel(node.args[0])
    return input_numel * (conv.out_channels // conv.groups) * math.prod(conv.kernel_size)


@register_mac_rule(nn.Linear)
def _linear_macs(linear: nn.Linear, node: fx.Node) -> int:
    return _per_sample_numel(node) * linear.in_features


def _functional_macs(node: fx.Node) -> int:
    """MACs of F.conv*d / F.linear calls, from the weight's recorded shape."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    shape = output_shape(weight) if isinstance(weight, fx.Node) else None
    if shape is None:
        return 0
    if node.target is F.linear:
        return _per_sample_numel(node) * shape[1]
    return _per_sample_numel(node) * math.prod(shape[1:])  # weight: [out, in/groups, *k]


FUNCTIONAL_MAC_TARGETS = {F.conv1d, F.conv2d, F.conv3d, F.linear}


def node_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """MACs per sample of one traced node (0 for nodes that are not conv or linear)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        rule = _rule_for(type(module))
        return int(rule(module, node)) if rule else 0
    if node.op == "call_function" and node.target in FUNCTIONAL_MAC_TARGETS:
        return int(_functional_macs(node))
    return 0


def _rule_for(module_type: type) -> MacRule | None:
    for klass in module_type.__mro__:
        if klass in MODULE_MAC_RULES:
            return MODULE_MAC_RULES[klass]
    return None


def node_params(gm: fx.GraphModule, node: fx.Node) -> int:
    """Learnable parameters owned by one node (a called module, or a get_attr parameter)."""
    if node.op == "call_module":
        return sum(p.numel() for p in gm.get_submodule(node.target).parameters())
    if node.op == "get_attr":
        attr = _get_attr(gm, node.target)
        return attr.numel() if isinstance(attr, nn.Parameter) else 0
    return 0


def _get_attr(gm: fx.GraphModule, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


@dataclass
class Counts:
    """Totals per sample plus the MACs of every node that has any."""

    macs: int
    flops: int
    params: int
    macs_per_node: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "params": self.params}


def count_macs(gm: fx.GraphModule) -> dict[str, int]:
    """MACs per node of a shape-propagated GraphModule (nodes with 0 MACs omitted)."""
    macs = {node.name: node_macs(gm, node) for node in gm.graph.nodes}
    return {name: value for name, value in macs.items() if value}


def _counted_run(model: nn.Module, example_input: torch.Tensor) -> FlopCounterMode:
    """One eval-mode forward of ``model`` under FlopCounterMode (its mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs per sample as torch's FlopCounterMode counts them."""
    return int(_counted_run(model, example_input).get_total_flops()) // example_input.shape[0]


# the aten ops of conv and linear layers: 2 FLOPs per MAC in FlopCounterMode
MAC_OPS = ("convolution", "addmm", "mm", "bmm", "baddbmm")


def count_untraced(model: nn.Module, input_size: tuple[int, int, int]) -> Counts:
    """Counts for a model torch.fx cannot trace, from one FlopCounterMode run: MACs are the
    FLOPs of its convolutions and matrix products halved (what :func:`count_model` counts
    for conv and linear layers; a bare matmul is included); no per-layer MACs."""
    example = example_input_for(input_size)
    counter = _counted_run(model, example)
    by_op = counter.get_flop_counts().get("Global", {})
    mac_flops = sum(int(v) for op, v in by_op.items()
                    if str(op).split(".")[1] in MAC_OPS)
    batch = example.shape[0]
    return Counts(macs=mac_flops // 2 // batch, flops=int(counter.get_total_flops()) // batch,
                  params=count_params(model))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_model(model: nn.Module, input_size: tuple[int, int, int]) -> Counts:
    """Trace ``model`` at ``input_size`` (C, H, W) and count MACs, FLOPs and params."""
    example = example_input_for(input_size)
    gm = trace_with_shapes(model, example)
    per_node = count_macs(gm)
    return Counts(
        macs=sum(per_node.values()),
        flops=count_flops(model, example),
        params=count_params(model),
        macs_per_node=per_node,
    )
