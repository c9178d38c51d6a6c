"""An exact cache of the teacher's logits, keyed by image and augmented view (``--cache-teacher``).

Training augmentation (:mod:`kdsearch.data.batches`) crops at one of ``(2p + 1)^2`` offsets
and, with ``hflip``, mirrors: a training image has ``V = (2p + 1)^2 * (2 if hflip else 1)``
views, and a frozen teacher in eval mode maps a view to the same logits every time. For a
method that uses the teacher only through ``self.teacher_logits(batch images)``
(``teacher_logits_only = True``, e.g. ``kd``) the logits of a view seen in an earlier epoch
can be read instead of recomputed. Filled lazily: each batch's views found in the cache are
read, the others go through the teacher in one forward (over the misses only) and are stored.
The key of a row is ``image index * V + (top * (2p + 1) + left) * F + flip`` (``F`` = 2 with
flips, else 1), from :class:`~kdsearch.data.batches.BatchViews`.

Memory: a dense float32 table of ``N * V * C`` values (N training images, C classes) on the
training device, plus ``N * V`` flags: digits (1797 images, p = 1, no flip: V = 9, C = 10)
0.6 MiB; CIFAR-100 (50000 images, p = 4 with flips: V = 162, C = 100) 3.0 GiB. Storing
float32 keeps it exact (bf16 logits of autocast are exactly float32 and are returned as
bf16). A cache over :data:`MAX_CACHE_BYTES`, or on CUDA over half the free GPU memory, is
refused with a :class:`KdsearchError` that gives the size. Under torchrun every process
keeps a whole table of its own, filled from the images of its shard.

Hit rate: each epoch draws a view uniformly per image, so in epoch ``e`` a view is in the
cache with probability ``1 - (1 - 1/V)^(e - 1)`` (one process; ``V * N_processes`` in place
of ``V`` under torchrun): CIFAR-100 reaches 50% near epoch 113 and 77% at epoch 240.

Exactness: the cached logits are the ones computed, so the run is the uncached run as long as
the teacher's result for an image does not depend on the rest of its batch: true on CPU
(the tests compare bit for bit); on CUDA the smaller batches of misses can make cuDNN pick
another algorithm, which may change the last bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from kdsearch.data.batches import BatchViews, DeviceBatches
from kdsearch.distill.method import DistillMethod, get_method, method_names
from kdsearch.errors import KdsearchError

MAX_CACHE_BYTES = 4 * 2**30  # CIFAR-100's 3.0 GiB fits


class TeacherLogitCache:
    """``cache(images)`` stands in for ``method.teacher_logits(images)``; call :meth:`select`
    with the batch's views before each training step."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor], batches: DeviceBatches,
                 num_classes: int):
        self.compute = compute
        self.padding, self.flips = batches.crop_padding, 2 if batches.hflip else 1
        self.views = (2 * self.padding + 1) ** 2 * self.flips
        entries = len(batches.labels) * self.views
        self.table = torch.empty(entries, num_classes, device=batches.device)
        self.filled = torch.zeros(entries, dtype=torch.bool, device=batches.device)
        self.dtype = torch.float32  # of the computed logits (bf16 under autocast)
        self.keys: torch.Tensor | None = None
        self.looked_up = self.computed = 0  # rows since the last take_hit_rate()

    def select(self, views: BatchViews) -> None:
        """The next call answers for this batch (one call per step)."""
        side = 2 * self.padding + 1
        view = (views.top * side + views.left) * self.flips + views.flip.long()
        self.keys = views.index * self.views + view

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        keys, self.keys = self.keys, None
        if keys is None or len(keys) != len(images):  # not the selected batch
            return self.compute(images)
        miss = (~self.filled[keys]).nonzero().squeeze(1)  # one host sync
        self.looked_up += len(keys)
        self.computed += len(miss)
        if len(miss) == len(keys):
            logits = self.compute(images)
            self.store(keys, logits)
            return logits
        if len(miss):
            self.store(keys[miss], self.compute(images[miss]))
        return self.table[keys].to(self.dtype)

    def store(self, keys: torch.Tensor, logits: torch.Tensor) -> None:
        self.dtype = logits.dtype
        self.table[keys] = logits.float()
        self.filled[keys] = True

    def take_hit_rate(self) -> float:
        """% of the rows looked up since the last call that the cache answered."""
        rate = 100.0 * (1 - self.computed / self.looked_up) if self.looked_up else 0.0
        self.looked_up = self.computed = 0
        return rate


def cache_bytes(images: int, views: int, classes: int) -> int:
    """Memory of a cache: float32 logits and one flag per (image, view)."""
    return images * views * (4 * classes + 1)


@contextmanager
def cached_teacher(method: DistillMethod, batches: DeviceBatches,
                   num_classes: int) -> Iterator[TeacherLogitCache]:
    """``method.teacher_logits`` answered by a :class:`TeacherLogitCache` inside the block."""
    check_cacheable(method)
    if not batches.finite_views:
        raise KdsearchError("--cache-teacher needs a dataset augmented with finitely many views "
                            "(padded crops and flips); this one takes random resized crops: "
                            "train without --cache-teacher")
    views = (2 * batches.crop_padding + 1) ** 2 * (2 if batches.hflip else 1)
    check_memory(cache_bytes(len(batches.labels), views, num_classes), batches.device,
                 f"{len(batches.labels)} images x {views} views x {num_classes} classes")
    cache = TeacherLogitCache(method.teacher_logits, batches, num_classes)
    method.teacher_logits = cache  # an instance attribute, shadowing the method
    try:
        yield cache
    finally:
        del method.teacher_logits


def check_cacheable(method: DistillMethod) -> None:
    if method.teacher is None:
        raise KdsearchError(f"--cache-teacher: method {method._label()} has no teacher")
    if not type(method).teacher_logits_only:
        able = [n for n in method_names() if get_method(n).teacher_logits_only]
        raise KdsearchError(
            f"--cache-teacher needs a method that uses only the teacher's logits "
            f"({', '.join(able) or 'none registered'}); {method._label()} does not declare "
            "teacher_logits_only = True"
        )


def check_memory(size: int, device: torch.device, what: str) -> None:
    limit, why = MAX_CACHE_BYTES, f"the limit of {MAX_CACHE_BYTES / 2**30:.0f} GiB"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] // 2
        if free < limit:
            limit, why = free, "half the free GPU memory"
    if size > limit:
        raise KdsearchError(
            f"--cache-teacher needs {size / 2**30:.2f} GiB ({what}, float32), over {why}; "
            "train without --cache-teacher"
        )
