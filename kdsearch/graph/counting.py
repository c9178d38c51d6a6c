"""Count MACs, FLOPs and parameters, per node of the traced graph.

What each number counts (per input sample):

- ``macs``: multiply-accumulates of convolutions, linear layers and matrix products between
  activations, what knowledge-distillation and pruning papers call "FLOPs" and torchvision's
  model tables call "GFLOPS". A conv output element costs ``in_channels / groups *
  prod(kernel)`` MACs; a linear output element ``in_features``; an element of ``a @ b`` the
  length of the summed dimension. Attention counts its projections (q, k, v and output,
  the ones inside ``nn.MultiheadAttention`` too) and its two products, ``Q K^T`` and
  ``softmax(.) V``. Normalisation, activations, softmax, pooling and additions are not
  counted. These are the figures torchvision publishes (vit_b_16 17.56G, swin_t 4.49G).
- ``flops``: everything :class:`torch.utils.flop_counter.FlopCounterMode` counts (it counts
  a multiply-accumulate as 2 FLOPs; for plain CNNs this is 2 * macs), with attention's
  fused kernels counted too (:func:`flop_counter`).
- ``params``: number of elements of all learnable parameters (buffers such as BatchNorm
  running statistics are not counted).

Rules are registered per module type (:func:`register_mac_rule`) and per function
(:func:`register_function_mac_rule`), so custom layers can be counted too. A node no rule
knows that may hide products (a leaf module holding a weight matrix, a block kept opaque
with ``register_leaf_module``, a function fx does not trace into, such as torchvision's
``shifted_window_attention``) is run once on meta tensors of its recorded input shapes under
FlopCounterMode, and its conv and matmul FLOPs are halved.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.errors import first_line
from kdsearch.graph.trace import example_input_for, output_shape, trace_with_shapes

MacRule = Callable[[nn.Module, fx.Node], int]
FunctionMacRule = Callable[[fx.Node], int]
MODULE_MAC_RULES: dict[type[nn.Module], MacRule] = {}
# call_function targets, and method names (str) of call_method nodes
FUNCTION_MAC_RULES: dict[Callable | str, FunctionMacRule] = {}


def register_mac_rule(*module_types: type[nn.Module]) -> Callable[[MacRule], MacRule]:
    """Decorator: ``rule(module, node) -> MACs per sample`` for nodes calling these modules."""

    def add(rule: MacRule) -> MacRule:
        for module_type in module_types:
            MODULE_MAC_RULES[module_type] = rule
        return rule

    return add


def register_function_mac_rule(
        *targets: Callable | str) -> Callable[[FunctionMacRule], FunctionMacRule]:
    """Decorator: ``rule(node) -> MACs per sample`` for nodes calling these functions (or,
    given as strings, these tensor methods)."""

    def add(rule: FunctionMacRule) -> FunctionMacRule:
        for target in targets:
            FUNCTION_MAC_RULES[target] = rule
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


def _arg_shape(node: fx.Node, index: int, name: str) -> tuple[int, ...] | None:
    arg = node.args[index] if len(node.args) > index else node.kwargs.get(name)
    return output_shape(arg) if isinstance(arg, fx.Node) else None


@register_function_mac_rule(F.conv1d, F.conv2d, F.conv3d, F.linear)
def _functional_macs(node: fx.Node) -> int:
    """MACs of F.conv*d / F.linear calls, from the weight's recorded shape."""
    shape = _arg_shape(node, 1, "weight")
    if shape is None:
        return 0
    if node.target is F.linear:
        return _per_sample_numel(node) * shape[1]
    return _per_sample_numel(node) * math.prod(shape[1:])  # weight: [out, in/groups, *k]


@register_function_mac_rule(torch.matmul, operator.matmul, torch.bmm, torch.mm,
                            "matmul", "bmm", "mm", "__matmul__")
def _matmul_macs(node: fx.Node) -> int:
    """``a @ b``: every output element sums over ``a``'s last dimension."""
    shape = _arg_shape(node, 0, "input")
    return _per_sample_numel(node) * shape[-1] if shape else 0


@register_function_mac_rule(torch.baddbmm, torch.addmm, torch.addbmm, "baddbmm", "addmm")
def _add_matmul_macs(node: fx.Node) -> int:
    """``c + a @ b`` (the first argument is ``c``): the product's MACs."""
    shape = _arg_shape(node, 1, "batch1") or _arg_shape(node, 1, "mat1")
    return _per_sample_numel(node) * shape[-1] if shape else 0


@register_function_mac_rule(F.scaled_dot_product_attention)
def _attention_macs(node: fx.Node) -> int:
    """``softmax(Q K^T) V``: ``Q K^T`` sums over the query width, ``(.) V`` over the keys."""
    query, key = _arg_shape(node, 0, "query"), _arg_shape(node, 1, "key")
    if query is None or key is None:
        return 0
    scores = math.prod(query[1:-1]) * key[-2]  # per sample: heads x queries x keys
    return scores * query[-1] + _per_sample_numel(node) * key[-2]


def node_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """MACs per sample of one traced node (0 for nodes without conv, linear or products)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        rule = _rule_for(type(module))
        if rule is not None:
            return int(rule(module, node))
        return _opaque_macs(gm, node) if _may_hide_products(module) else 0
    if node.op in ("call_function", "call_method"):
        rule = FUNCTION_MAC_RULES.get(node.target)
        if rule is not None:
            return int(rule(node))
        if node.op == "call_function" and _is_opaque_function(node.target):
            return _opaque_macs(gm, node)
    return 0


def _rule_for(module_type: type) -> MacRule | None:
    for klass in module_type.__mro__:
        if klass in MODULE_MAC_RULES:
            return MODULE_MAC_RULES[klass]
    return None


def _may_hide_products(module: nn.Module) -> bool:
    """A leaf with a weight matrix (nn.MultiheadAttention, nn.TransformerEncoderLayer), or
    a block the user keeps opaque: what is inside is not in the graph."""
    return (not type(module).__module__.startswith("torch.nn")
            or any(p.dim() >= 2 for p in module.parameters()))


# torch's own functions are either counted by a rule or compute no products; these are not
OPAQUE_TORCH_FUNCTIONS = {torch.einsum}
MAC_FREE_MODULES = ("torch", "_operator", "operator", "builtins", "math")


def _is_opaque_function(target) -> bool:
    """A function fx kept as one node (``torch.fx.wrap``) whose inside it did not record."""
    if target in OPAQUE_TORCH_FUNCTIONS:
        return True
    module = getattr(target, "__module__", None) or ""
    return module.split(".")[0] not in MAC_FREE_MODULES


def _opaque_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """MACs of a node no rule knows: run it once under :func:`flop_counter`, its MAC FLOPs
    halved; on meta tensors of the recorded input shapes (no data, no compute), or where
    that fails (code that reads values) on zeros."""
    for device in ("meta", None):  # None: where the graph's parameters are
        try:
            with flop_counter() as counter:
                _run_alone(gm, node, device)
            return mac_flops(counter) // 2 // _traced_batch(gm)
        except Exception as err:  # an exotic block: say so rather than count it as 0 silently
            error = err
    warnings.warn(f"cannot count the MACs inside {node.target} (counted as 0): "
                  f"{type(error).__name__}: {first_line(error)}", stacklevel=3)
    return 0


def _run_alone(gm: fx.GraphModule, node: fx.Node, device: str | None) -> None:
    """Run one node on made-up inputs of its recorded shapes, in eval mode, without grad."""
    device = device or next((p.device for p in gm.parameters()), torch.device("cpu"))
    args, kwargs = fx.node.map_arg((node.args, node.kwargs),
                                   lambda n: _stand_in(gm, n, torch.device(device)))
    if node.op != "call_module":
        with torch.no_grad():
            node.target(*args, **kwargs)
        return
    module = gm.get_submodule(node.target)
    state = {name: tensor.to(device)
             for name, tensor in chain(module.named_parameters(), module.named_buffers())}
    was_training = module.training
    try:
        with torch.no_grad():
            torch.func.functional_call(module.eval(), state, tuple(args), dict(kwargs))
    finally:
        module.train(was_training)


def _stand_in(gm: fx.GraphModule, node: fx.Node, device: torch.device):
    """Zeros of the shape ``node`` produced (its attribute, for a get_attr node)."""
    if node.op == "get_attr":
        value = _get_attr(gm, node.target)
        return value.to(device) if isinstance(value, torch.Tensor) else value
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape"):
        raise ValueError(f"the value of {node.name} was not recorded")
    return torch.zeros(meta.shape, dtype=meta.dtype, device=device)


def _traced_batch(gm: fx.GraphModule) -> int:
    """The batch size the graph's shapes were recorded at (the first input's first dim)."""
    first = next((node for node in gm.graph.nodes if node.op == "placeholder"), None)
    shape = output_shape(first) if first is not None else None
    return shape[0] if shape else 1


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


# -- FlopCounterMode ----------------------------------------------------------------------------
def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU kernel of scaled_dot_product_attention (torch's table lacks it): as
    torch counts the other kernels, 2 per MAC of ``Q K^T`` and of ``(.) V``."""
    *batch, queries, width = query
    keys, value_width = key[-2], value[-1]
    return 2 * math.prod(batch) * queries * keys * (width + value_width)


EXTRA_FLOP_FORMULAS = {
    op: _cpu_attention_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """FlopCounterMode that sees attention too: ``nn.MultiheadAttention``'s fused inference
    path (one op FlopCounterMode has no formula for) is switched off while it counts, and
    the CPU kernel of scaled_dot_product_attention is counted like the others."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


# the aten ops of conv, linear layers and products: 2 FLOPs per MAC in FlopCounterMode
MAC_OPS = ("convolution", "addmm", "mm", "bmm", "baddbmm",
           "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
           "_flash_attention_forward", "_efficient_attention_forward")


def mac_flops(counter: FlopCounterMode) -> int:
    """The FLOPs of the ops in :data:`MAC_OPS` a counter saw (2 per MAC)."""
    by_op = counter.get_flop_counts().get("Global", {})
    return sum(int(v) for op, v in by_op.items() if str(op).split(".")[1] in MAC_OPS)


def _counted_run(model: nn.Module, example_input: torch.Tensor) -> FlopCounterMode:
    """One eval-mode forward of ``model`` under :func:`flop_counter` (its mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs per sample as torch's FlopCounterMode counts them (attention included)."""
    return int(_counted_run(model, example_input).get_total_flops()) // example_input.shape[0]


def count_untraced(model: nn.Module, input_size: tuple[int, int, int]) -> Counts:
    """Counts for a model torch.fx cannot trace, from one :func:`flop_counter` run: MACs are
    the FLOPs of its convolutions, matrix products and attention kernels halved (what
    :func:`count_model` counts); no per-layer MACs."""
    example = example_input_for(input_size)
    counter = _counted_run(model, example)
    batch = example.shape[0]
    return Counts(macs=mac_flops(counter) // 2 // batch,
                  flops=int(counter.get_total_flops()) // batch, params=count_params(model))


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
