"""Trace a model with torch.fx and record every tensor's shape.

An analysis here is an fx trace followed by :class:`torch.fx.passes.shape_prop.ShapeProp`,
which writes ``node.meta["tensor_meta"]``. A model that cannot be traced fails with a
:class:`TraceFailure` naming the module (and the error) that broke the trace. Modules whose
type is registered with :func:`register_leaf_module` are kept opaque: the trace records them
as one node, which is how users keep exotic blocks out of the analysis.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from kdsearch.errors import KdsearchError

LEAF_MODULE_TYPES: set[type[nn.Module]] = set()


def register_leaf_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator (or plain call): trace modules of this type as single opaque nodes."""
    LEAF_MODULE_TYPES.add(cls)
    return cls


try:  # stochastic depth must keep following train()/eval(), so it stays one module
    from torchvision.ops import StochasticDepth

    register_leaf_module(StochasticDepth)
except ImportError:  # pragma: no cover
    pass


class TraceFailure(KdsearchError):
    """The model could not be traced; the message names the module and the error."""


class _PathTracer(fx.Tracer):
    """An fx tracer that remembers which module it was inside when tracing broke."""

    def __init__(self):
        super().__init__()
        self.kd_path_stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, tuple(LEAF_MODULE_TYPES)) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.kd_path_stack.append(self.path_of_module(m) or type(m).__name__)
        result = super().call_module(m, forward, args, kwargs)
        self.kd_path_stack.pop()
        return result


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule (parameters shared, not copied).

    The trace is taken in eval mode, so Python branches on ``self.training`` (auxiliary
    heads, functional dropout) take their inference path; modules keep following
    ``train()``/``eval()`` afterwards.
    """
    tracer = _PathTracer()
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as err:  # fx raises many types; all mean "not traceable"
        where = tracer.kd_path_stack[-1] if tracer.kd_path_stack else "the top-level forward"
        kind = type(model).__name__
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TraceFailure(
            f"cannot trace {kind}: in module '{where}': {type(err).__name__}: {detail} "
            "(register that block with kdsearch.graph.register_leaf_module to keep it opaque)"
        ) from err
    finally:
        model.train(was_training)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.train(was_training)
    return gm


def trace_with_shapes(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """Trace ``model`` and run ``example_input`` through it to record shapes (eval mode)."""
    gm = symbolic_trace(model)
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as err:
        node = _failing_node(err)
        raise TraceFailure(
            f"cannot run {type(model).__name__} on an input of shape {list(example_input.shape)}"
            f"{node}: {type(err).__name__}: {str(err).strip().splitlines()[0]}"
        ) from err
    finally:
        gm.train(was_training)
    return gm


def _failing_node(err: Exception) -> str:
    for note in getattr(err, "__notes__", []) or []:
        if "node" in note.lower():
            return f" ({note.strip().splitlines()[0]})"
    return ""


def output_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's tensor output, or None for non-tensor outputs."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def example_input_for(input_size: tuple[int, int, int], batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *input_size)
