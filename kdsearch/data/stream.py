"""Image files decoded by DataLoader workers: whole passes (:func:`map_files`), and
:class:`StreamBatches`, the batches interface of :class:`~kdsearch.data.batches.DeviceBatches`
over a split that stays on disk.

Each training view is drawn from its own seed, drawn in turn from a generator seeded by
``(seed, epoch)`` with the batch order: the batches of an epoch are the same whatever the
number of workers, and a resumed run that calls ``set_epoch`` sees the original's. Under
``shard=(rank, count)`` every process draws the same order and seeds and decodes only its
own slice of each batch. Batches come through pinned memory to a CUDA device.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from kdsearch.data.batches import (
    BatchViews,
    EpochBatches,
    check_shard,
    epoch_seed,
    model_input,
)
from kdsearch.data.crops import ResizedCrop
from kdsearch.data.imagefiles import ImageFiles, UnreadableImage, eval_view, train_view
from kdsearch.errors import KdsearchError

MAX_WORKERS = 8
SEED_RANGE = 2**62  # the per-view seeds are drawn in 0 .. SEED_RANGE - 1


def default_workers() -> int:
    """``KDSEARCH_DATA_WORKERS`` if set, else one per CPU core but one, at most
    :data:`MAX_WORKERS`; 0 (decode in this process) inside a daemon process, which may not
    start processes of its own."""
    if multiprocessing.current_process().daemon:
        return 0
    given = os.environ.get("KDSEARCH_DATA_WORKERS")
    if given is not None:
        if not given.isdigit():
            raise KdsearchError(f"KDSEARCH_DATA_WORKERS must be a number >= 0, not {given!r}")
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(MAX_WORKERS, max((cores or 1) - 1, 0))


class FileTask(Dataset):
    """Item ``key`` is ``read(paths[i], *rest)`` for a key ``i`` or ``(i, *rest)``; a file
    that cannot be read gives its one-line message (a ``str``) instead of an exception in a
    worker, which the DataLoader would wrap in a traceback."""

    def __init__(self, paths: Sequence[str], read: Callable[..., torch.Tensor]):
        self.paths, self.read = paths, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, ...]) -> torch.Tensor | str:
        index, *rest = key if isinstance(key, tuple) else (key,)
        try:
            return self.read(self.paths[index], *rest)
        except UnreadableImage as err:
            return str(err)


def stack_or_error(items: list[torch.Tensor | str]) -> torch.Tensor | str:
    """The items stacked into a batch, or the first error message among them."""
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else torch.stack(items)


def checked(batch: torch.Tensor | str) -> torch.Tensor:
    if isinstance(batch, str):
        raise UnreadableImage(batch)
    return batch


def map_files(files: ImageFiles, read: Callable[..., torch.Tensor], what: str,
              batch_size: int = 64) -> Iterator[torch.Tensor]:
    """``read(path)`` of every file in order, stacked by ``batch_size``, decoded by
    ``files.workers`` processes; a progress bar named ``what`` on a terminal."""
    loader = DataLoader(FileTask(files.paths, read), batch_size=batch_size,
                        num_workers=files.workers, collate_fn=stack_or_error)
    for batch in tqdm(loader, desc=what, unit="batch", disable=None, leave=False):
        yield checked(batch)


class _BatchKeys:
    """The DataLoader's batch sampler: yields the keys :class:`StreamBatches` set for the
    epoch (read in the main process, so persistent workers see each epoch's keys)."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamBatches(EpochBatches):
    """Iterate ``(float32 normalised images [B, C, H, W], int64 labels [B])`` on ``device``,
    decoding ``files`` in DataLoader workers, with the arguments and behaviour of
    :class:`~kdsearch.data.batches.DeviceBatches` (batch order, ``drop_last``, ``set_epoch``,
    ``shard``, ``len()``). Training views are ``RandomResizedCrop(crop.size)`` of the whole
    image + a flip if ``hflip``; evaluation views the stored-size resize + centre crop.
    ``iter_views`` gives each row's index; a streamed view has no finite key
    (``finite_views`` is False): its ``top``/``left``/``flip`` are zeros.
    """

    finite_views = False

    def __init__(self, files: ImageFiles, labels: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], device: str | torch.device,
                 train: bool, crop: ResizedCrop, hflip: bool = True, seed: int = 0,
                 drop_last: bool | None = None, channels_last: bool = False,
                 shard: tuple[int, int] = (0, 1)):
        check_shard(shard, batch_size, train)
        self.files, self.crop, self.seed, self.shard = files, crop, seed, shard
        self.device = torch.device(device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.train, self.channels_last = batch_size, train, channels_last
        self.hflip, self.crop_padding = hflip and train, 0
        self._epochs_and_normalisation(train, drop_last, mean, std)
        self._keys = _BatchKeys()
        self._loader: DataLoader | None = None

    def iter_views(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchViews]]:
        """Like ``iter()``, with each batch's :class:`BatchViews` (indices) as a third item."""
        keys = self._epoch_keys(self.epoch)
        self.epoch += 1
        self._keys.batches = keys
        for batch_keys, images in zip(keys, self._data_loader(), strict=True):
            index = torch.tensor([k[0] if self.train else k for k in batch_keys],
                                 device=self.device)
            zeros = torch.zeros_like(index)
            images = checked(images).to(self.device, non_blocking=True)
            images = model_input(images, self._offset, self._scale, self.channels_last)
            yield images, self.labels[index], BatchViews(index, zeros, zeros, zeros.bool())

    def _epoch_keys(self, epoch: int) -> list[list]:
        """This shard's keys of each batch: ``(index, view seed)`` when training, else the
        index, in the epoch's order."""
        count = len(self.labels)
        order, seeds = torch.arange(count), None
        if self.train:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            order = torch.randperm(count, generator=generator)
            seeds = torch.randint(SEED_RANGE, (count,), generator=generator)
        rank, shards = self.shard
        batches = []
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            whole = slice(start, min(start + self.batch_size, count))
            size = -(-(whole.stop - whole.start) // shards)
            rows = slice(whole.start + rank * size, min(whole.start + (rank + 1) * size,
                                                         whole.stop))
            index = order[rows].tolist()
            keys = index if seeds is None else list(zip(index, seeds[rows].tolist(),
                                                        strict=True))
            if keys:  # a short last evaluation batch can leave a shard nothing
                batches.append(keys)
        return batches

    def _data_loader(self) -> DataLoader:
        """The DataLoader, made on first use; its workers stay for the later epochs."""
        if self._loader is None:
            files = self.files
            if self.train:  # called as read(path, seed)
                read = partial(train_view, channels=files.channels, crop=self.crop,
                               hflip=self.hflip)
            else:
                read = partial(eval_view, channels=files.channels, stored=files.size,
                               size=self.crop.size)
            workers = 0 if multiprocessing.current_process().daemon else files.workers
            self._loader = DataLoader(
                FileTask(files.paths, read), batch_sampler=self._keys,
                num_workers=workers, collate_fn=stack_or_error,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)
        return self._loader

