"""Training on several processes under torchrun, with DistributedDataParallel.

``torchrun --nproc_per_node=N -m kdsearch train ...`` (or ``... kdsearch teacher ...``)
starts N processes and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each one's
environment. :func:`setup` reads them and initialises the process group (NCCL on
``cuda:LOCAL_RANK``, gloo on CPU); the :class:`Distributed` it returns is all the trainer
knows of it. Without torchrun (or with one process) it is ``Distributed()`` and every helper
is a no-op, so the trainer has one code path.

N processes compute the single-process run with the same ``--batch-size`` (the *global*
batch), up to the order of floating-point sums:

* all processes draw the same order and augmentation (seeded by ``(seed, epoch)``) and each
  trains on its own slice of ``batch_size / N`` images of every global batch
  (``DeviceBatches(shard=...)``); together the slices are the global batch;
* :meth:`Distributed.parallel` wraps the method in ``DistributedDataParallel`` over the
  parameters the trainer's optimiser steps (student and ``extra_parameters()``; everything
  else, the teacher and a method's own critic, is left out of DDP). DDP averages their
  gradients, which for losses that are batch means is the global batch's gradient;
* BatchNorm layers in training mode normalise with the global batch's statistics (torch's
  ``SyncBatchNorm`` on CUDA, all-reduced sums on CPU, where SyncBatchNorm does not run), so
  the statistics and running estimates are the single-process ones;
* an optimiser the method owns (KDFM's discriminator) steps on gradients averaged over the
  processes (a step pre-hook all-reduces them): the step of the global batch;
* metric sums and the test set's correct count (evaluation is sharded too) are all-reduced
  once per epoch; only rank 0 (:attr:`Distributed.is_main`) writes files and prints.

DDP runs with ``find_unused_parameters=True``: a method or student whose loss leaves some
trained parameter unused in a step (a branch skipped, a feature not tapped) still works,
for one extra walk over the autograd graph per step (DDP prints a warning once per process
when it found none unused). No buffer broadcast before each forward: the only buffers
training changes are BatchNorm's, identical on every process here. A loss that is not a
mean of per-image terms (a batch-wise similarity) would see only the process's slice; no
built-in method has one.

Stopping: torchrun passes SIGINT/SIGTERM on to every process; each stops after its current
step as one process would, and rank 0 writes the checkpoint of the last completed epoch. A
process left waiting in a collective by a peer that has stopped fails (gloo) or is ended
by torchrun; the checkpoint is rank 0's either way. Resuming needs nothing special: every
process loads ``checkpoint.pt`` (rank 0 alone rewrites ``metrics.jsonl``), and a run may
be resumed with another number of processes (the global batch is the same).
"""

from __future__ import annotations

import atexit
import gc
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from kdsearch.errors import KdsearchError


def is_main_process() -> bool:
    """Whether this process writes the files every process shares: rank 0 under torchrun
    (known from ``RANK`` before any process group exists), or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun a CUDA device is ``cuda:LOCAL_RANK``."""
    if not launched() or device.type != "cuda":
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.index is not None and device.index != local_rank:
        raise KdsearchError(f"under torchrun process {local_rank} uses cuda:{local_rank}, "
                            f"not {device}: pass --device cuda (or auto)")
    if local_rank >= torch.cuda.device_count():
        raise KdsearchError(f"process {local_rank} has no GPU: {torch.cuda.device_count()} "
                            "visible; start at most that many processes per node")
    return torch.device("cuda", local_rank)


def setup(device: torch.device) -> Distributed:
    """The process group torchrun asks for, initialised once per process, on ``device``."""
    if not launched():
        return Distributed()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(cleanup)
    return Distributed(dist.get_rank(), dist.get_world_size())


def cleanup() -> None:
    """Destroy the process group (registered with atexit by :func:`setup`, for runs that
    end in an error; a finished run calls :func:`shutdown`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shutdown() -> None:
    """End a finished run in order on every process: the DDP wrappers and their reducers
    (kept alive by reference cycles) are collected while the interpreter is whole, all
    processes meet, then the process group is destroyed. Left to interpreter exit, a gloo
    process group torn down beside live reducers could abort a process (SIGABRT,
    "terminate called without an active exception", seen under load)."""
    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes, and what they do together."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)``, as :class:`~kdsearch.data.batches.DeviceBatches` takes it."""
        return self.rank, self.world_size

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise KdsearchError(
                f"--batch-size {batch_size} is the global batch; it must be divisible by the "
                f"{self.world_size} processes (each trains on batch-size / processes images)"
            )

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``tensor`` reduced (``"sum"``, ``"min"``) over the processes, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable objects)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextmanager
    def parallel(self, method: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[nn.Module]:
        """What runs the training forward: ``method`` itself, or with several processes
        ``DDP(method)`` with global BatchNorm and averaged own optimisers (undone on exit)."""
        if self.world_size == 1:
            yield method
            return
        trained = [p for group in optimizer.param_groups for p in group["params"]]
        device = trained[0].device if trained else torch.device("cpu")
        with global_batchnorm(method, device), averaged_own_optimisers(method, optimizer):
            yield wrap_ddp(method, trained)


SINGLE_PROCESS = Distributed()
# DDP's switch for its per-forward buffer broadcast (renamed in newer torch; the old name warns)
NO_BUFFER_SYNC = ("forward_sync_buffers" if "forward_sync_buffers" in
                  inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")


def wrap_ddp(method: nn.Module, trained: list[nn.Parameter]) -> DistributedDataParallel:
    """``DDP`` over ``trained`` only: it wraps a :class:`TrainedPart` of ``method``."""
    device = trained[0].device if trained else torch.device("cpu")
    return DistributedDataParallel(
        TrainedPart(method, trained), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True, **{NO_BUFFER_SYNC: False},
    )


class TrainedPart(nn.Module):
    """What DDP wraps: the trained parameters, registered (DDP averages their gradients and
    sees nothing else: not the frozen teacher, not a method's own optimiser's parameters),
    running the whole method, which is held but not registered."""

    def __init__(self, method: nn.Module, trained: list[nn.Parameter]):
        super().__init__()
        self.trained = nn.ParameterList(trained)  # the same Parameter objects, not copies
        object.__setattr__(self, "method", method)  # not a submodule: hidden from DDP

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.method(*args, **kwargs)

    def train(self, mode: bool = True) -> TrainedPart:
        self.method.train(mode)
        return super().train(mode)


@contextmanager
def averaged_own_optimisers(method: nn.Module, trainer_optimizer) -> Iterator[None]:
    """Each optimiser the method keeps as an attribute (a discriminator's) steps on
    gradients averaged over the processes."""
    owned = {id(value): value for module in method.modules() for value in vars(module).values()
             if isinstance(value, torch.optim.Optimizer) and value is not trainer_optimizer}
    handles = [opt.register_step_pre_hook(average_gradients) for opt in owned.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def average_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Replace the gradients of ``optimizer``'s parameters by their mean over the processes
    (one all-reduce of them all, flattened)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, mean in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
        grad.copy_(mean.view_as(grad))


class CpuGlobalBatchNorm(_BatchNorm):
    """A BatchNorm layer whose training statistics are the global batch's, on CPU (where
    ``SyncBatchNorm`` does not run); evaluation mode is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_initialized() and dist.get_world_size() > 1:
            return cpu_global_batch_norm(self, x)
        return super().forward(x)


@contextmanager
def global_batchnorm(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Every BatchNorm layer of ``module`` uses the global batch's statistics in the block.

    The layers change class in place (``SyncBatchNorm`` on accelerators,
    :class:`CpuGlobalBatchNorm` on CPU) and back on exit, so modules that share them (graph
    taps, a teacher's head) see the change and ``state_dict`` keys stay the same.
    """
    synced = CpuGlobalBatchNorm if device.type == "cpu" else nn.SyncBatchNorm
    layers = [(m, type(m)) for m in module.modules()
              if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm)]
    for layer, _ in layers:
        layer.__class__ = synced
        layer.process_group = None  # SyncBatchNorm's: the whole world
    try:
        yield
    finally:
        for layer, original in layers:
            layer.__class__ = original
            del layer.process_group


def cpu_global_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm of ``x`` with mean and variance over every process's batch
    (two all-reduces forward, two backward); updates ``bn``'s running estimates as
    ``F.batch_norm`` would with the global batch. Computed in float32, as BatchNorm is
    under bf16 autocast."""
    x = x.float()
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = [0, *range(2, x.dim())]
    local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() // x.shape[1])])
    total = all_reduce_sum(local)
    count, mean = total[-1], total[:-1] / total[-1]
    centered = x - mean.view(shape)
    var = all_reduce_sum(centered.square().sum(dims)) / count  # biased, as normalisation uses
    out = centered * (var + bn.eps).rsqrt().view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1 / bn.num_batches_tracked.item()
            bn.running_mean.lerp_(mean, factor)
            bn.running_var.lerp_(var * count / (count - 1), factor)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes; the gradient is summed too (every process's loss uses it)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over the processes."""
    return _AllReduceSum.apply(tensor)

