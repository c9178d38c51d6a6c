"""Wall time per batch of a model on a device: eager, ``torch.compile``'d, or onnxruntime.

Measured with :meth:`torch.utils.benchmark.Timer.blocked_autorange`: the call runs in
blocks of ``calls_per_block`` calls until ``min_run_time`` seconds are spent, and each of
the measurement's times is one block's mean time per call. ``median_ms`` is their median,
``p90_ms`` their 90th percentile (of block means: one slow call in a block of several is
averaged in). Before timing, :data:`WARMUP` calls (``torch.compile`` compiles in the first)
and the Timer's own block-size estimate run. The input is one fixed random float32 batch;
torch models run in eval mode under ``torch.inference_mode``; the Timer waits for CUDA
after each block. Threads: torch's intra-op threads (``--threads``), or onnxruntime's for
ONNX, whose timing includes copying the batch from and to host memory.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from kdsearch.deploy.export import EXPORT_BATCH, onnx_session, require, serialise
from kdsearch.errors import KdsearchError, first_line
from kdsearch.numerics import resolve_device
from kdsearch.registry import unknown_name_message

WARMUP = 3  # calls before timing
Call = Callable[[], object]


@dataclass(frozen=True)
class Latency:
    """Wall time per batch of ``batch_size`` inputs (milliseconds)."""

    backend: str  # eager, compiled or onnx
    device: str
    batch_size: int
    threads: int
    median_ms: float
    p90_ms: float
    blocks: int  # timed blocks
    calls_per_block: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1,
                    device: str | torch.device = "cpu", backend: str = "eager",
                    threads: int | None = None, min_run_time: float = 1.0) -> Latency:
    """Time ``model`` (a float32 copy on ``device``; the model itself is left as it is) on
    batches ``[batch_size, *input_size]`` for about ``min_run_time`` seconds after warm-up.
    ``threads``: default torch's current intra-op thread count."""
    if backend not in BACKENDS:
        raise KdsearchError(unknown_name_message("latency backend", backend, list(BACKENDS)))
    if batch_size < 1 or min_run_time <= 0:
        raise KdsearchError("latency needs a batch size of at least 1 and a positive time")
    device = resolve_device(device) if isinstance(device, str) else device
    threads = threads or torch.get_num_threads()
    call = BACKENDS[backend](model, (batch_size, *input_size), device, threads)
    with _quiet_cpp_extension():
        _warm_up(call, f"{type(model).__name__} ({backend}) on {device}")
        from torch.utils.benchmark import Timer

        timer = Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    times = torch.tensor(measurement.times, dtype=torch.float64)
    return Latency(backend, str(device), batch_size, threads, 1e3 * measurement.median,
                   1e3 * float(torch.quantile(times, 0.9)), len(measurement.times),
                   measurement.number_per_run)


def _warm_up(call: Call, what: str) -> None:
    try:
        for _ in range(WARMUP):
            call()
    except KdsearchError:
        raise
    except Exception as err:
        raise KdsearchError(f"cannot run {what}: {type(err).__name__}: "
                            f"{first_line(err)}") from err


@contextlib.contextmanager
def _quiet_cpp_extension() -> Iterator[None]:
    """Without the note torch's C++ extension support logs (torch.utils.benchmark and
    torch.compile import it) on a machine without CUDA."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_call(model: nn.Module, shape: tuple[int, ...], device: torch.device,
                threads: int, compiled: bool = False) -> Call:
    model = copy.deepcopy(model).to(device, torch.float32).eval()
    if compiled:
        model = torch.compile(model)
    x = torch.randn(shape, device=device)

    def call():
        with torch.inference_mode():
            return model(x)

    return call


def _compiled_call(model: nn.Module, shape: tuple[int, ...], device: torch.device,
                   threads: int) -> Call:
    return _torch_call(model, shape, device, threads, compiled=True)


def _onnx_call(model: nn.Module, shape: tuple[int, ...], device: torch.device,
               threads: int) -> Call:
    """An onnxruntime session of the model's ONNX export (the one ``kdsearch export``
    writes) on the CPU, or on CUDA where onnxruntime has its CUDA provider."""
    require(("onnx", "onnxruntime"), "latency --onnx")
    import onnxruntime

    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device.type)
    if provider not in onnxruntime.get_available_providers():
        raise KdsearchError(f"this onnxruntime cannot run on {device} (it has "
                            f"{', '.join(onnxruntime.get_available_providers())}); for CUDA "
                            "pip install onnxruntime-gpu")
    options = {"device_id": device.index or 0} if device.type == "cuda" else {}
    cpu_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    data = serialise("onnx", cpu_model, torch.randn(EXPORT_BATCH, *shape[1:]))
    session = onnx_session(data, ((provider, options),), threads)
    feed = {"input": torch.randn(shape).numpy()}
    return lambda: session.run(None, feed)


# backend -> builder of its timed call: (model, input shape, device, threads) -> call()
BACKENDS: dict[str, Callable[..., Call]] = {
    "eager": _torch_call, "compiled": _compiled_call, "onnx": _onnx_call}
