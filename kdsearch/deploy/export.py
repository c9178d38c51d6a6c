"""Export a model to ONNX, TorchScript or a ``torch.export`` program, and check the result.

The float32 model is serialised in memory, loaded back from those very bytes and run on
seeded random inputs at batch sizes other than the one it was exported at (the batch
dimension is dynamic in every format); :class:`ExportCheck` holds the largest absolute
difference to the eager model. The caller writes the bytes only after that.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``, opset 17). The
``torch.export``-based one (torch's default since 2.9) gave the same differences on the
zoo, students and a ViT, but needs the ``onnxscript`` package on top of onnx, took 2 s
instead of 0.2 s per small model, and changed its API across the torch versions kdsearch
supports (2.4 on); the TorchScript exporter works unchanged on all of them.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line
from kdsearch.registry import Registry

EXPORT_BATCH = 2  # the batch size of the example the model is exported with
CHECK_BATCHES = (1, 5)  # the batch sizes the exported model is checked at
ONNX_OPSET = 17  # LayerNormalization is native from 17; onnxruntime 1.17 runs up to 20
EXPORT_EXTRA = "pip install kdsearch[export]"

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExportFormat:
    """How one format is written and read back: ``serialise(model, example) -> bytes``,
    ``load(bytes) -> run(input) -> output``; ``needs``: optional packages it imports."""

    suffix: str
    serialise: Callable[[nn.Module, torch.Tensor], bytes]
    load: Callable[[bytes], Runner]
    needs: tuple[str, ...] = ()


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


@dataclass(frozen=True)
class ExportCheck:
    """The exported model against the eager one: the largest absolute difference of their
    outputs over ``inputs`` random inputs at each of ``batches``."""

    max_abs_diff: float
    batches: tuple[int, ...]
    export_batch: int
    inputs: int


@dataclass(frozen=True)
class Exported:
    format: str
    data: bytes
    check: ExportCheck


def export_model(model: nn.Module, input_size: tuple[int, ...], fmt: str,
                 seed: int = 0) -> Exported:
    """Export a float32 CPU copy of ``model`` (eval mode) taking ``[batch, *input_size]``
    to ``fmt`` (onnx, torchscript, exported) and check it at :data:`CHECK_BATCHES`."""
    spec = EXPORT_FORMATS.get(fmt)
    require(spec.needs, f"{fmt} export")
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(EXPORT_BATCH, *input_size, generator=generator)
    _eager(model, example)  # a model that returns no single tensor fails here, plainly
    data = serialise(fmt, model, example)
    with warnings.catch_warnings():  # torch.jit.load's deprecation note
        warnings.simplefilter("ignore")
        run = spec.load(data)
    inputs = [torch.randn(batch, *input_size, generator=generator) for batch in CHECK_BATCHES]
    diff = max(_difference(model, run, x, fmt) for x in inputs)
    return Exported(fmt, data, ExportCheck(diff, CHECK_BATCHES, EXPORT_BATCH, len(inputs)))


def serialise(fmt: str, model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` (float32, CPU, eval mode) as ``fmt`` bytes, exported at ``example``; a
    model the exporter cannot take is one line naming the error."""
    try:
        with warnings.catch_warnings():  # the exporters' tracer and deprecation notes
            warnings.simplefilter("ignore")
            return EXPORT_FORMATS.get(fmt).serialise(model, example)
    except Exception as err:
        raise KdsearchError(f"cannot export {type(model).__name__} to {fmt}: "
                            f"{type(err).__name__}: {first_line(err)}") from err


def require(packages: tuple[str, ...], what: str) -> None:
    """Fail with one line naming the extra to install when an optional package is missing."""
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            raise KdsearchError(f"{what} needs the {name} package: {EXPORT_EXTRA}") from None


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise KdsearchError(f"{type(model).__name__} returns {type(out).__name__}; export "
                            "needs a model that returns one tensor (the logits)")
    return out


def _difference(model: nn.Module, run: Runner, x: torch.Tensor, fmt: str) -> float:
    try:
        with torch.inference_mode():
            exported = run(x)
    except Exception as err:
        raise KdsearchError(f"the {fmt} export fails at batch size {x.shape[0]} (exported "
                            f"at {EXPORT_BATCH}; is the batch size fixed in the model's "
                            f"code?): {type(err).__name__}: {first_line(err)}") from err
    expected = _eager(model, x)
    if exported.shape != expected.shape:
        raise KdsearchError(f"the {fmt} export gives shape {list(exported.shape)} at batch "
                            f"size {x.shape[0]}, the model {list(expected.shape)}")
    return float((exported.float() - expected).abs().max())


# -- the formats --------------------------------------------------------------------------------
def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX with a dynamic batch dimension (input ``input``, output ``logits``)."""
    buffer = io.BytesIO()
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}  # torch < 2.5 has only the TorchScript exporter
    torch.onnx.export(model, (example,), buffer, input_names=["input"],
                      output_names=["logits"], opset_version=ONNX_OPSET,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **legacy)
    return buffer.getvalue()


def onnx_session(data: bytes, providers: tuple = ("CPUExecutionProvider",),
                 threads: int | None = None):
    """An onnxruntime session of ``data`` (intra-op ``threads``, default: onnxruntime's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(data, options, providers=list(providers))


def _onnx_runner(data: bytes) -> Runner:
    session = onnx_session(data)
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _torchscript_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, example, check_trace=False), buffer)
    return buffer.getvalue()


def _torchscript_runner(data: bytes) -> Runner:
    return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _exported_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _exported_runner(data: bytes) -> Runner:
    return torch.export.load(io.BytesIO(data)).module()


EXPORT_FORMATS.register("onnx")(
    ExportFormat(".onnx", onnx_bytes, _onnx_runner, needs=("onnx", "onnxruntime")))
EXPORT_FORMATS.register("torchscript")(
    ExportFormat(".pt", _torchscript_bytes, _torchscript_runner))
EXPORT_FORMATS.register("exported")(
    ExportFormat(".pt2", _exported_bytes, _exported_runner))
