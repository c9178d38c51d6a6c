"""Which channels can be removed together: channel spaces found on the traced graph.

Every tensor's channel axis gets a :class:`Layout`: the axis index and the channel spaces
it is made of (more than one after a concatenation; channels repeated ``repeat`` times after
a flatten). A conv or linear layer *produces* a new space with its output channels and
*consumes* the layout of its input. Channel-wise ops (BatchNorm, activations, pooling,
depthwise conv, per-channel parameters) pass layouts through; an elementwise op of two
tracked tensors (a residual add, a squeeze-excite multiply) *unites* their spaces, so their
channels are removed together. An op that mixes channels in a way removal cannot express
(a reshape, a slice, a grouped conv, a LayerNorm over channels, the model output) *fixes*
the spaces that reach it: they stay whole.

Rules are tables keyed by module type, function and method name; extend them with
:func:`register_passthrough_module` for custom channel-wise layers.
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.graph.trace import output_shape


@dataclass(frozen=True)
class Layout:
    """The channel axis of one tensor: ``segments`` are (space, length) in axis order."""

    dim: int
    segments: tuple[tuple[int, int], ...]
    repeat: int = 1

    @property
    def width(self) -> int:
        return sum(length for _, length in self.segments) * self.repeat

    def spaces(self) -> list[int]:
        return [space for space, _ in self.segments]

    def moved(self, dim: int) -> Layout:
        return Layout(dim, self.segments, self.repeat)


@dataclass
class ChannelRecords:
    """What analysing one graph found: spaces, their unions, and who touches them."""

    sizes: list[int] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)  # root -> reason
    producers: dict[str, int] = field(default_factory=dict)  # node -> space of its output
    consumers: dict[str, Layout] = field(default_factory=dict)  # node -> layout of its input
    members: dict[str, Layout] = field(default_factory=dict)  # channel-wise node -> layout
    param_members: dict[str, tuple[int, Layout]] = field(default_factory=dict)  # get_attr
    layouts: dict[str, Layout] = field(default_factory=dict)  # every tracked node output

    def new_space(self, size: int, origin: str, fixed: str | None = None) -> int:
        index = len(self.sizes)
        self.sizes.append(size)
        self.origin.append(origin)
        self.parent.append(index)
        if fixed:
            self.fixed[index] = fixed
        return index

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def unite(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        reason = self.fixed.pop(gone, None)
        if reason and keep not in self.fixed:
            self.fixed[keep] = reason

    def fix(self, layout: Layout | None, reason: str) -> None:
        for space in layout.spaces() if layout else ():
            self.fixed.setdefault(self.root(space), reason)

    def is_fixed(self, space: int) -> bool:
        return self.root(space) in self.fixed


PASSTHROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout,
)
SPATIAL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
    nn.Upsample,
)
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
PASSTHROUGH_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, torch.sigmoid,
    F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout2d,
    torch.nn.functional.relu_,
}
SPATIAL_FUNCTIONS = {
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, F.interpolate,
    F.adaptive_avg_pool1d, F.avg_pool1d, F.max_pool1d,
}
BINARY_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
}
PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous", "clone", "float", "to",
    "type_as", "detach",
}
BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
NON_TENSOR_METHODS = {"size", "dim", "numel"}


def register_passthrough_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare a custom module channel-wise (channel c of its output depends on channel c only)."""
    global PASSTHROUGH_MODULES
    if cls not in PASSTHROUGH_MODULES:
        PASSTHROUGH_MODULES += (cls,)
    return cls


def _register_torchvision_passthroughs() -> None:
    """torchvision's stochastic depth is identity at inference and per-sample in training. A
    model holding it has imported torchvision; kdsearch does not import it for others."""
    module = sys.modules.get("torchvision.ops.stochastic_depth")
    if module is not None:
        register_passthrough_module(module.StochasticDepth)
        PASSTHROUGH_FUNCTIONS.add(module.stochastic_depth)


class ChannelAnalysis:
    """Walks a shape-propagated GraphModule once and fills :class:`ChannelRecords`."""

    def __init__(self, gm: fx.GraphModule):
        _register_torchvision_passthroughs()
        self.gm = gm
        self.records = ChannelRecords()
        self.shared_modules = _modules_called_more_than_once(gm)

    def run(self) -> ChannelRecords:
        for node in self.gm.graph.nodes:
            layout = self.visit(node)
            if layout is not None:
                self.records.layouts[node.name] = layout
        return self.records

    # -- dispatch -------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> Layout | None:
        if node.op == "placeholder":
            return self.fixed_layout(node, "network input")
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                self.records.fix(self.layout(arg), "reaches the network output")
            return None
        if node.op == "get_attr":
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.gm.get_submodule(node.target))
        if node.op == "call_function":
            return self.visit_function(node)
        return self.visit_method(node)

    def visit_module(self, node: fx.Node, module: nn.Module) -> Layout | None:
        if node.target in self.shared_modules and any(True for _ in module.parameters()):
            return self.unsupported(node, f"module {node.target} is called more than once")
        if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return self.conv(node, module)
        if isinstance(module, nn.Linear):
            return self.dense(node, module.out_features, channel_last=True)
        if isinstance(module, NORM_MODULES):
            return self.member(node, self.layout(node.args[0]), expect_dim=1)
        if isinstance(module, nn.PReLU) and module.num_parameters > 1:
            return self.member(node, self.layout(node.args[0]), expect_dim=1)
        if isinstance(module, (*PASSTHROUGH_MODULES, nn.PReLU)):
            return self.layout(node.args[0])
        if isinstance(module, SPATIAL_MODULES):
            return self.spatial(node)
        return self.unsupported(node, f"{type(module).__name__} ({node.target}) mixes channels")

    def visit_function(self, node: fx.Node) -> Layout | None:
        target = node.target
        if target in BINARY_FUNCTIONS:
            return self.binary(node)
        if target in PASSTHROUGH_FUNCTIONS:
            return self.layout(node.args[0])
        if target in SPATIAL_FUNCTIONS:
            return self.spatial(node)
        if target in (torch.cat, torch.concat):
            return self.cat(node)
        if target is torch.flatten:
            return self.flatten(node)
        if target is torch.mean:
            return self.reduction(node)
        if target in (torch.permute, torch.transpose):
            return self.permute(node)
        if target is getattr or (output_shape(node) is None and target is operator.getitem):
            return None
        return self.unsupported(node, f"function {getattr(target, '__name__', target)}")

    def visit_method(self, node: fx.Node) -> Layout | None:
        name = node.target
        if name in NON_TENSOR_METHODS:
            return None
        if name in PASSTHROUGH_METHODS:
            return self.layout(node.args[0])
        if name in BINARY_METHODS:
            return self.binary(node)
        if name in ("view", "reshape", "flatten"):
            return self.flatten(node)
        if name == "mean":
            return self.reduction(node)
        if name in ("permute", "transpose"):
            return self.permute(node)
        return self.unsupported(node, f"method .{name}()")

    # -- helpers --------------------------------------------------------------------------
    def layout(self, arg) -> Layout | None:
        return self.records.layouts.get(arg.name) if isinstance(arg, fx.Node) else None

    def fixed_layout(self, node: fx.Node, reason: str) -> Layout | None:
        shape = output_shape(node)
        if not shape or len(shape) < 2:
            return None
        return Layout(1, ((self.records.new_space(shape[1], node.name, reason), shape[1]),))

    def unsupported(self, node: fx.Node, reason: str) -> None:
        for arg in _flat_nodes((node.args, node.kwargs)):
            self.records.fix(self.layout(arg), reason)
        return None

    # -- rules ----------------------------------------------------------------------------
    def conv(self, node: fx.Node, conv: nn.Conv2d) -> Layout | None:
        if conv.groups == 1:
            return self.dense(node, conv.out_channels, channel_last=False)
        if conv.groups == conv.in_channels == conv.out_channels:
            return self.member(node, self.layout(node.args[0]), expect_dim=1)
        self.unsupported(node, f"grouped conv {node.target}")
        return self.fixed_layout(node, f"output of grouped conv {node.target}")

    def dense(self, node: fx.Node, out_channels: int, channel_last: bool) -> Layout:
        """A conv or linear layer: consumes its input's channels, produces a new space."""
        shape = output_shape(node)
        dim = len(shape) - 1 if channel_last else 1
        layout = self.layout(node.args[0])
        if layout is not None and layout.dim == dim:
            self.records.consumers[node.name] = layout
        else:
            self.records.fix(layout, f"{node.name} reads channels on another axis")
        space = self.records.new_space(out_channels, node.name)
        self.records.producers[node.name] = space
        return Layout(dim, ((space, out_channels),))

    def member(self, node: fx.Node, layout: Layout | None, expect_dim: int) -> Layout | None:
        """A channel-wise layer with per-channel parameters: sliced with its layout."""
        if layout is None:
            return None
        if layout.dim != expect_dim or layout.repeat != 1:
            self.records.fix(layout, f"{node.name} sees channels on another axis")
            return layout
        self.records.members[node.name] = layout
        return layout

    def spatial(self, node: fx.Node) -> Layout | None:
        """Pooling / resizing acts on the trailing spatial axes only."""
        layout = self.layout(node.args[0])
        if layout is None:
            return None
        if layout.dim != 1:
            self.records.fix(layout, f"{node.name} pools over the channel axis")
            return None
        return layout

    def binary(self, node: fx.Node) -> Layout | None:
        out_shape = output_shape(node)
        if out_shape is None:
            return None
        tensors = [arg for arg in node.args[:2] if isinstance(arg, fx.Node)]
        layouts = [self.aligned(arg, len(out_shape)) for arg in tensors]
        tracked = [layout for layout in layouts if layout is not None]
        if not tracked:
            return None
        result = tracked[0]
        for layout in tracked[1:]:
            if not _compatible(result, layout):
                self.records.fix(result, f"{node.name} combines different channel layouts")
                self.records.fix(layout, f"{node.name} combines different channel layouts")
                return None
            for (a, _), (b, _) in zip(result.segments, layout.segments, strict=True):
                self.records.unite(a, b)
        for arg, layout in zip(tensors, layouts, strict=True):
            if layout is None:
                self.untracked_operand(node, arg, result, len(out_shape))
        return result

    def aligned(self, arg: fx.Node, out_ndim: int) -> Layout | None:
        layout = self.layout(arg)
        shape = output_shape(arg)
        if layout is None or shape is None:
            return None
        return layout.moved(layout.dim + out_ndim - len(shape))

    def untracked_operand(self, node, arg: fx.Node, layout: Layout, out_ndim: int) -> None:
        """A parameter broadcast over the channel axis is sliced; anything else must be 1 wide."""
        shape = output_shape(arg)
        if shape is None:
            return
        axis = layout.dim - (out_ndim - len(shape))
        if axis < 0 or shape[axis] == 1:
            return
        if arg.op == "get_attr" and layout.repeat == 1:
            self.records.param_members[arg.name] = (axis, layout)
            return
        self.records.fix(layout, f"{node.name} mixes in an untracked tensor")

    def cat(self, node: fx.Node) -> Layout | None:
        inputs = list(node.args[0])
        out_shape = output_shape(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        dim %= len(out_shape)
        layouts = [self.layout(arg) for arg in inputs]
        if dim != 1 or any(lay is not None and (lay.dim != 1 or lay.repeat != 1)
                           for lay in layouts):
            return self.unsupported(node, f"{node.name} concatenates along a non-channel axis")
        segments: list[tuple[int, int]] = []
        for arg, layout in zip(inputs, layouts, strict=True):
            layout = layout or self.fixed_layout(arg, "untracked concat input")
            segments.extend(layout.segments)
        return Layout(1, tuple(segments))

    def flatten(self, node: fx.Node) -> Layout | None:
        """Flattening the channel axis with the axes after it repeats each channel."""
        layout = self.layout(node.args[0])
        in_shape, out_shape = output_shape(node.args[0]), output_shape(node)
        if layout is None or in_shape is None:
            return None
        if out_shape == in_shape:
            return layout
        d = layout.dim
        if out_shape == (*in_shape[:d], math.prod(in_shape[d:])):
            return Layout(d, layout.segments, layout.repeat * math.prod(in_shape[d + 1:]))
        return self.unsupported(node, f"{node.name} reshapes the channel axis")

    def reduction(self, node: fx.Node) -> Layout | None:
        layout = self.layout(node.args[0])
        in_shape = output_shape(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if layout is None or dims is None:
            return self.unsupported(node, f"{node.name} reduces over all axes")
        dims = [d % len(in_shape) for d in ([dims] if isinstance(dims, int) else dims)]
        if layout.dim in dims:
            return self.unsupported(node, f"{node.name} reduces over the channel axis")
        shift = 0 if keepdim else sum(d < layout.dim for d in dims)
        return layout.moved(layout.dim - shift)

    def permute(self, node: fx.Node) -> Layout | None:
        layout = self.layout(node.args[0])
        if layout is None:
            return None
        ndim = len(output_shape(node))
        if node.target in ("permute", torch.permute):
            order = node.args[1:] if isinstance(node.args[1], int) else node.args[1]
            order = [d % ndim for d in order]
            return layout.moved(order.index(layout.dim))
        a, b = (d % ndim for d in node.args[1:3])
        swap = {a: b, b: a}
        return layout.moved(swap.get(layout.dim, layout.dim))


def _compatible(a: Layout, b: Layout) -> bool:
    return (a.dim == b.dim and a.repeat == b.repeat
            and [n for _, n in a.segments] == [n for _, n in b.segments])


def _flat_nodes(obj) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(obj, lambda n: found.append(n) or n)
    return found


def _modules_called_more_than_once(gm: fx.GraphModule) -> set[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            (repeated if node.target in seen else seen).add(node.target)
    return repeated


def analyse_channels(gm: fx.GraphModule) -> ChannelRecords:
    """Find the channel spaces of a shape-propagated GraphModule."""
    return ChannelAnalysis(gm).run()
