"""Mini-batches made on the device: a whole split lives there as uint8, augmented per batch.

Augmentation semantics (training only), the same as torchvision's
``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip()``:

* each image is padded by ``p`` zero pixels on every side *in uint8 space* (black, before
  normalisation), then an ``H x W`` window is cut at a top/left offset drawn uniformly and
  independently per image from ``{0, ..., 2p}``; offset ``p`` is the unshifted image;
* if ``hflip``, each image is mirrored left-right with probability 1/2 (after the crop);
* then ``x -> (x / 255 - mean) / std`` per channel, in float32.

The whole batch is cropped and flipped by one gather (no per-image Python loop). The batch
order and all random draws come from a generator seeded by ``(seed, epoch)``, so a resumed
run that calls ``set_epoch(epoch)`` sees exactly the batches of the original run (on the same
device type and torch version).

A dataset of any resolution (``imagefolder``) carries a
:class:`~kdsearch.data.crops.ResizedCrop` instead of a padding: training batches are
torchvision's ``RandomResizedCrop`` + flip of the stored images, evaluation batches their
centre crop (:mod:`kdsearch.data.crops`), drawn per batch from the same ``(seed, epoch)``
generator. A split kept on disk (:class:`~kdsearch.data.imagefiles.ImageFiles`) gets
:class:`~kdsearch.data.stream.StreamBatches`, the same interface over DataLoader workers.

Several processes (:mod:`kdsearch.distill.distributed`) each pass ``shard=(rank, count)``:
all draw the same order and augmentation for every whole batch and each keeps its own
contiguous slice of it, so the slices of the ``count`` processes are the unsharded batch.
:meth:`DeviceBatches.iter_views` also says which image and which view each row is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from kdsearch.data.base import ImageDataset
from kdsearch.data.crops import ResizedCrop, center_crop, resized_crop, sample_boxes

if TYPE_CHECKING:
    from kdsearch.data.stream import StreamBatches


class BatchViews(NamedTuple):
    """Which image and which augmented view each row of a batch is (all ``[B]``, on the device)."""

    index: torch.Tensor  # int64: position of the image in the split
    top: torch.Tensor  # int64: crop offsets in 0..2p (p, the padding, is the unshifted image)
    left: torch.Tensor
    flip: torch.Tensor  # bool: mirrored left-right (after the crop)


class Boxes(NamedTuple):
    """The boxes of random resized crops (int64 ``[B]``; their corners are the views'
    ``top``, ``left``)."""

    height: torch.Tensor
    width: torch.Tensor


class EpochBatches:
    """What every batch iterator shares: epochs (:meth:`set_epoch`), the batch count
    (``len()``, after ``drop_last``) and the normalisation constants of uint8 pixels. A
    subclass sets ``labels``, ``batch_size``, ``train`` and ``device``, calls
    :meth:`_epochs_and_normalisation` and yields ``(images, labels, views)`` from
    :meth:`iter_views`."""

    labels: torch.Tensor
    batch_size: int
    device: torch.device

    def _epochs_and_normalisation(self, train: bool, drop_last: bool | None,
                                  mean: Sequence[float], std: Sequence[float]) -> None:
        full_batch_exists = len(self.labels) >= self.batch_size
        self.drop_last = (train and full_batch_exists) if drop_last is None else drop_last
        shape = (1, len(mean), 1, 1)
        self._offset = torch.tensor(mean, device=self.device).view(shape) * 255
        self._scale = torch.tensor(std, device=self.device).view(shape) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use ``epoch`` (its order and augmentation)."""
        self.epoch = epoch

    def __len__(self) -> int:
        count, rest = divmod(len(self.labels), self.batch_size)
        return count if self.drop_last or rest == 0 else count + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, _ in self.iter_views():
            yield images, labels

    def iter_views(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchViews]]:
        raise NotImplementedError


class DeviceBatches(EpochBatches):
    """Iterate ``(float32 normalised images [B, C, H, W], int64 labels [B])`` on ``device``.

    ``train=True``: a fresh permutation and augmentation each epoch, the last partial batch
    dropped (``drop_last=None`` means: drop it when training and at least one full batch
    exists). ``train=False``: the stored order, no augmentation, no batch dropped.
    Each ``iter()`` uses the current epoch and then advances it by one; call
    :meth:`set_epoch` before iterating to choose the epoch (e.g. when resuming).
    ``len()`` is the number of batches per epoch.

    ``shard=(rank, count)``: yield only this process's slice of each batch (rows
    ``rank * b : (rank + 1) * b`` with ``b = ceil(batch / count)``); training needs
    ``batch_size`` divisible by ``count``; a shard whose slice of a short last batch is
    empty skips it. The default ``(0, 1)`` is the whole batch.

    ``resized_crop`` (instead of ``crop_padding``): training takes a random resized crop of
    each stored image (mirrored if ``hflip``), evaluation its centre crop, at
    ``resized_crop.size``. ``finite_views`` says whether an image has finitely many
    augmented views (padded crops: yes; resized crops: no).
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device,
        train: bool,
        crop_padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        resized_crop: ResizedCrop | None = None,
    ):
        _check_inputs(images_uint8, labels, batch_size, mean, std, crop_padding)
        check_shard(shard, batch_size, train)
        if resized_crop is not None and crop_padding:
            raise ValueError("give crop_padding or resized_crop, not both")
        self.device = torch.device(device)
        self.images = images_uint8.to(self.device)  # moved once, stays uint8
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.hflip = hflip and train
        self.resized_crop = resized_crop
        self.seed = seed
        self.channels_last = channels_last
        self.shard = shard
        self._epochs_and_normalisation(train, drop_last, mean, std)

    @property
    def finite_views(self) -> bool:
        return self.resized_crop is None

    def iter_views(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchViews]]:
        """Like ``iter()``, with each batch's :class:`BatchViews` as a third item."""
        generator = self._generator(self.epoch) if self.train else None
        self.epoch += 1
        order = self._order(generator)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            views, boxes = self._views(order[start : start + self.batch_size], generator)
            if len(views.index) == 0:
                continue  # a short last evaluation batch can leave a shard nothing
            images = self._prepare(self.images[views.index], views, boxes)
            yield images, self.labels[views.index], views

    def _views(self, index: torch.Tensor, generator: torch.Generator | None
               ) -> tuple[BatchViews, Boxes | None]:
        """Draw the whole batch's augmentation, then keep this shard's rows."""
        views, boxes = self._draw(index, generator)
        rank, count = self.shard
        if count == 1:
            return views, boxes
        size = -(-len(index) // count)
        rows = slice(rank * size, (rank + 1) * size)
        shard = BatchViews(*(part[rows] for part in views))
        return shard, None if boxes is None else Boxes(*(part[rows] for part in boxes))

    def _draw(self, index: torch.Tensor, generator: torch.Generator | None
              ) -> tuple[BatchViews, Boxes | None]:
        """The augmentation of a whole batch (none without a generator: evaluation)."""
        zeros = torch.zeros_like(index)
        if generator is None or not (self.crop_padding or self.hflip or self.resized_crop):
            return BatchViews(index, zeros, zeros, zeros.bool()), None
        if self.resized_crop is None:
            return BatchViews(index, *sample_augmentation(
                len(index), self.crop_padding, self.hflip, generator, self.device)), None
        crop, (height, width) = self.resized_crop, self.images.shape[2:]
        box = sample_boxes(len(index), height, width, generator, crop.scale, crop.ratio)
        *_, flip = sample_augmentation(len(index), 0, self.hflip, generator, self.device)
        top, left, box_h, box_w = (part.to(self.device) for part in box)
        return BatchViews(index, top, left, flip), Boxes(box_h, box_w)

    def _order(self, generator: torch.Generator | None) -> torch.Tensor:
        """A random permutation when training, else ``0..N-1``, on the device."""
        count = len(self.labels)
        if generator is None:
            return torch.arange(count, device=self.device)
        return torch.randperm(count, generator=generator, device=generator.device).to(self.device)

    def _prepare(self, batch: torch.Tensor, views: BatchViews, boxes: Boxes | None
                 ) -> torch.Tensor:
        """Augment (training) and normalise one uint8 batch."""
        if self.resized_crop is not None:
            size = self.resized_crop.size
            if boxes is None:  # evaluation
                batch = center_crop(batch, size)
            else:
                batch = resized_crop(batch.float(), views.top, views.left, boxes.height,
                                     boxes.width, views.flip, size)
        elif self.crop_padding or self.hflip:  # both off when not training
            batch = crop_and_flip(batch, self.crop_padding, views.top, views.left, views.flip)
        return model_input(batch, self._offset, self._scale, self.channels_last)

    def _generator(self, epoch: int) -> torch.Generator:
        """A generator seeded by ``(seed, epoch)``, on the device if it supports one."""
        try:
            generator = torch.Generator(device=self.device)
        except RuntimeError:
            generator = torch.Generator()
        return generator.manual_seed(epoch_seed(self.seed, epoch))


def dataset_batches(
    dataset: ImageDataset,
    split: str,
    batch_size: int,
    device: str | torch.device,
    seed: int = 0,
    *,
    train: bool | None = None,
    drop_last: bool | None = None,
    channels_last: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> DeviceBatches | StreamBatches:
    """:class:`DeviceBatches` over ``split`` (``"train"`` or ``"test"``) of ``dataset``, or
    :class:`~kdsearch.data.stream.StreamBatches` for a split kept as files.

    ``train`` (shuffle + the dataset's augmentation) defaults to ``split == "train"``; pass
    ``train=False`` to evaluate on the train split. ``shard``: see :class:`DeviceBatches`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images = dataset.train_images if split == "train" else dataset.test_images
    labels = dataset.train_labels if split == "train" else dataset.test_labels
    options = dict(batch_size=batch_size, mean=dataset.mean, std=dataset.std, device=device,
                   train=split == "train" if train is None else train, hflip=dataset.hflip,
                   seed=seed, drop_last=drop_last, channels_last=channels_last, shard=shard)
    if isinstance(images, torch.Tensor):
        return DeviceBatches(images, labels, crop_padding=dataset.crop_padding,
                             resized_crop=dataset.crop, **options)
    from kdsearch.data.stream import StreamBatches  # it builds on this module

    if dataset.crop is None:
        raise ValueError(f"{dataset.name}: a split kept as files needs a crop (ResizedCrop)")
    return StreamBatches(images, labels, crop=dataset.crop, **options)


def model_input(batch: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
                channels_last: bool) -> torch.Tensor:
    """``(batch - offset) / scale`` in float32 (``offset = 255 mean``, ``scale = 255 std``,
    ``[1, C, 1, 1]``), in the channels-last memory format if asked."""
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch.float().sub_(offset).div_(scale)


def sample_augmentation(
    count: int, padding: int, hflip: bool, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image crop offsets ``top, left`` uniform in ``0..2*padding`` and flip flags."""
    where = generator.device
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=where)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=where)
    if hflip:
        flip = torch.rand(count, generator=generator, device=where) < 0.5
    else:
        flip = torch.zeros(count, dtype=torch.bool, device=where)
    return top.to(device), left.to(device), flip.to(device)


def crop_and_flip(
    images: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Crop each image of ``[B, C, H, W]`` from its zero-padded copy, then mirror where ``flip``.

    Image ``i`` of the result is ``pad(images[i])[:, top[i] : top[i] + H, left[i] : left[i] + W]``,
    reversed along W if ``flip[i]``. One gather for the whole batch (the same pixel positions
    for every channel of an image).
    """
    count, channels, height, width = images.shape
    padded_width = width + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)  # [B, C, Hp*Wp]
    rows = top[:, None] + torch.arange(height, device=images.device)  # [B, H]
    cols = left[:, None] + torch.arange(width, device=images.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    pixel_index = (rows[:, :, None] * padded_width + cols[:, None, :]).flatten(1)  # [B, H*W]
    cropped = padded.gather(2, pixel_index[:, None, :].expand(count, channels, -1))
    return cropped.view(count, channels, height, width)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8 [N, C, H, W]`` images on the 0..1 scale."""
    pixels = images.double().div(255).transpose(0, 1).flatten(1)  # [C, N*H*W]
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit generator seed for ``(seed, epoch)`` (both non-negative)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _check_inputs(images, labels, batch_size, mean, std, crop_padding) -> None:
    """Raise ValueError unless the arguments of :class:`DeviceBatches` fit together."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be [N] with N={len(images)}, got {tuple(labels.shape)}")
    if not len(mean) == len(std) == images.shape[1]:
        raise ValueError(
            f"mean/std need {images.shape[1]} channel values, got {len(mean)}/{len(std)}"
        )
    if batch_size < 1 or crop_padding < 0:
        raise ValueError(
            f"need batch_size >= 1 and crop_padding >= 0, got {batch_size}, {crop_padding}"
        )


def check_shard(shard: tuple[int, int], batch_size: int, train: bool) -> None:
    rank, count = shard
    if not 0 <= rank < count:
        raise ValueError(f"shard must be (rank, count) with 0 <= rank < count, got {shard}")
    if train and batch_size % count:
        raise ValueError(f"training batch_size {batch_size} is not divisible by {count} shards")
