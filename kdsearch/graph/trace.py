"""Trace a model with torch.fx and record every tensor's shape.

An analysis here is an fx trace followed by one run of an example input through an
:class:`torch.fx.Interpreter` that writes each tensor's shape into
``node.meta["tensor_meta"]`` (as torch's ShapeProp does, minus its printed tracebacks).
A model that cannot be traced fails with a
:class:`TraceFailure` naming the module (and the error) that broke the trace. Modules whose
type is registered with :func:`register_leaf_module` are kept opaque: the trace records them
as one node, which is how users keep exotic blocks out of the analysis.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line

LEAF_MODULE_TYPES: set[type[nn.Module]] = set()
# Frames under these are the tracer's own; the frame after them is the model's code.
LIBRARY_ROOTS = (Path(torch.__file__).parent, Path(__file__).parent)


def register_leaf_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator (or plain call): trace modules of this type as single opaque nodes."""
    LEAF_MODULE_TYPES.add(cls)
    return cls


def _register_known_leaves() -> None:
    """Stochastic depth must keep following train()/eval(), so it stays one module. A model
    holding one has imported torchvision already; kdsearch does not import it for others."""
    stochastic_depth = sys.modules.get("torchvision.ops.stochastic_depth")
    if stochastic_depth is not None:
        register_leaf_module(stochastic_depth.StochasticDepth)


class TraceFailure(KdsearchError):
    """The model could not be traced; the message names the module and the error."""


class _PathTracer(fx.Tracer):
    """An fx tracer that remembers which module it was inside when tracing broke."""

    def __init__(self):
        super().__init__()
        self.kd_path_stack: list[str] = []
        _register_known_leaves()

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
        detail = first_line(err)
        line = _source_line(err)
        raise TraceFailure(
            f"cannot trace {kind}: in module '{where}'{line}: {type(err).__name__}: {detail} "
            "(register that block with kdsearch.graph.register_leaf_module to keep it opaque)"
        ) from err
    finally:
        model.train(was_training)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.train(was_training)
    return gm


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: torch.dtype


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once, writing every tensor output's shape into ``node.meta``."""

    def run_node(self, node: fx.Node):
        try:
            result = super().run_node(node)
        except Exception as err:
            where = node.target if node.op == "call_module" else node.name
            raise TraceFailure(f"at {where}: {type(err).__name__}: "
                               f"{first_line(err)}") from err
        if isinstance(result, torch.Tensor):
            node.meta["tensor_meta"] = TensorMeta(tuple(result.shape), result.dtype)
        return result


def trace_with_shapes(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """Trace ``model`` and run ``example_input`` through it to record shapes (eval mode)."""
    gm = symbolic_trace(model)
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            _ShapeRecorder(gm).run(example_input)
    except TraceFailure as err:
        raise TraceFailure(f"cannot run {type(model).__name__} on an input of shape "
                           f"{list(example_input.shape)}: {first_line(err)}") from err
    finally:
        gm.train(was_training)
    return gm


def _source_line(err: Exception) -> str:
    """`` at FILE:LINE `code` ``: the model's own line that broke the trace, if any."""
    frames = [frame for frame in traceback.extract_tb(err.__traceback__)
              if not any(Path(frame.filename).is_relative_to(root) for root in LIBRARY_ROOTS)]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()}`"


def output_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's tensor output, or None for non-tensor outputs."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def example_input_for(input_size: tuple[int, int, int], batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *input_size)
