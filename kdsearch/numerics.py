"""How computations run on a device: bf16 autocast and channels-last where they pay, and the
CPU thread count.

The fast path (bf16 autocast + channels-last) is taken on CUDA, and on a CPU that computes
bf16 natively (AVX512-BF16 or AMX, as torch reports them). On such a CPU the two together ran
a KD step 1.5-2x faster than float32 contiguous, while either alone was slower, so they are
switched together. Elsewhere the run stays float32 and contiguous.

Threads: ``--threads N`` wins, then ``OMP_NUM_THREADS``, then the cores not already busy
(usable cores minus the 1-minute load average, at least 1). On a 2-core machine with one core
taken by another process, two threads ran a KD step at 0.5x of one thread (a search of a tiny
model at 1/28x): each parallel region waits for the thread that shares its core. The OpenMP
wait policy is not the cause: ``OMP_WAIT_POLICY=PASSIVE`` gave the same 0.5x (141 vs 137
images/s), so the cure is fewer threads, not sleeping ones.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from kdsearch.errors import KdsearchError


def cpu_has_native_bf16() -> bool:
    """True where torch reports native bf16 arithmetic on this CPU (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@dataclass(frozen=True)
class Numerics:
    """The numerics a run takes on its device: bf16 autocast and channels-last, or neither."""

    device_type: str
    amp: bool
    channels_last: bool

    @classmethod
    def for_device(cls, device: torch.device, amp: bool = True,
                   channels_last: bool = True) -> Numerics:
        """What ``amp``/``channels_last`` (the user's wishes) give on ``device``."""
        if device.type == "cuda":
            return cls("cuda", amp, channels_last)
        fast = device.type == "cpu" and cpu_has_native_bf16()
        # on the CPU channels-last alone was slower than contiguous float32: only with bf16
        return cls(device.type, amp and fast, channels_last and amp and fast)

    @property
    def name(self) -> str:
        """``"bf16+channels_last"``, ``"bf16"``, ``"float32+channels_last"`` or ``"float32"``."""
        return ("bf16" if self.amp else "float32") + ("+channels_last" if self.channels_last
                                                      else "")

    def autocast(self):
        """bf16 autocast on the device when enabled, else a no-op context."""
        if self.amp:
            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in channels-last when enabled (in place; returned for chaining)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module


FLOAT32_CPU = Numerics("cpu", False, False)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available, else cpu; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdsearchError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdsearchError(f"device {name!r} requested but CUDA is not available")
    return device


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else the usable cores not busy with other work."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env.split(",")[0]))
        except ValueError:
            raise KdsearchError(f"OMP_NUM_THREADS={env!r} is not a number of threads") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # not available on this system
        busy = 0
    return max(1, cores - busy)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (``None``: :func:`default_threads`); return the count.

    What every command does first; the Python API leaves torch's process-wide count to its
    caller, who gets the same policy with ``kdsearch.set_threads()``.
    """
    if threads is not None and threads < 1:
        raise KdsearchError(f"--threads must be at least 1, not {threads}")
    count = threads if threads is not None else default_threads()
    torch.set_num_threads(count)
    return count
