"""torchvision's reference crops (``RandomResizedCrop`` + flip, resize + ``CenterCrop``) as
batch operations.

:class:`ResizedCrop` says how a dataset of any resolution becomes model input of one size:

* evaluation: the image resized so that it covers the *stored size*
  (:func:`stored_size`: the input size / :data:`CROP_FRACTION`, e.g. 36 x 36 for 32 x 32 input,
  256 x 256 for 224 x 224), centre-cropped to it, then centre-cropped to the input size:
  torchvision's ``Resize(256)`` + ``CenterCrop(224)``;
* training: a box of random area (``scale`` of the image) and aspect ratio (``ratio``), drawn as
  ``RandomResizedCrop.get_params`` does (10 tries, else the central box), resized to the
  input size, then mirrored with probability 1/2.

:func:`sample_boxes` draws the boxes of a whole batch at once (all 10 tries in one draw; the
first valid try wins, so the distribution is torchvision's); :func:`resized_crop` cuts and
resizes them on the device with one bilinear ``grid_sample``. That resize has no
anti-aliasing; decoded datasets store images at the stored size, so a crop is shrunk by at
most ``1 / CROP_FRACTION`` (1.14x), where aliasing is negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_FRACTION = 0.875  # evaluation: the centre crop covers 87.5% of the side (224 of 256)
ATTEMPTS = 10  # RandomResizedCrop's tries before it falls back to the central box


@dataclass(frozen=True)
class ResizedCrop:
    """The reference transforms at output ``size`` ``(H, W)``; ``scale`` and ``ratio`` are
    ``RandomResizedCrop``'s (area fraction, width / height)."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def stored_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size evaluation resizes to before its centre crop: ``floor(side / 0.875)``."""
    return tuple(math.floor(side / CROP_FRACTION) for side in size)  # type: ignore[return-value]


def sample_boxes(
    count: int, height: int, width: int, generator: torch.Generator,
    scale: tuple[float, float], ratio: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``RandomResizedCrop.get_params`` for ``count`` images of ``height x width`` at once:
    int64 ``top, left, box_height, box_width`` of shape ``[count]`` on the generator's device."""
    where = generator.device
    draws = torch.empty(2, count, ATTEMPTS, dtype=torch.float64, device=where)
    area = draws[0].uniform_(scale[0], scale[1], generator=generator) * (height * width)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = draws[1].uniform_(*log_ratio, generator=generator).exp_()
    box_w, box_h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
    box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
    fallback_h, fallback_w = _central_box(height, width, ratio)
    found = fits.any(1)
    box_h = torch.where(found, box_h, fallback_h).long()
    box_w = torch.where(found, box_w, fallback_w).long()
    offsets = torch.rand(2, count, dtype=torch.float64, generator=generator, device=where)
    top = (offsets[0] * (height - box_h + 1)).long().minimum(height - box_h)
    left = (offsets[1] * (width - box_w + 1)).long().minimum(width - box_w)
    top = torch.where(found, top, (height - box_h) // 2)
    left = torch.where(found, left, (width - box_w) // 2)
    return top, left, box_h, box_w


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """RandomResizedCrop's fallback: the whole image, trimmed to the nearest allowed ratio."""
    if width / height < min(ratio):
        return round(width / min(ratio)), width
    if width / height > max(ratio):
        return height, round(height * max(ratio))
    return height, width


def resized_crop(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, box_h: torch.Tensor,
    box_w: torch.Tensor, flip: torch.Tensor, size: tuple[int, int],
) -> torch.Tensor:
    """Cut box ``i`` out of float ``images[i]`` ``[B, C, H, W]``, resize it to ``size``
    (bilinear, pixel centres aligned as in ``F.interpolate(align_corners=False)``) and mirror
    it where ``flip``; one ``grid_sample`` for the batch."""
    count, channels, height, width = images.shape
    theta = torch.zeros(count, 2, 3, dtype=images.dtype, device=images.device)
    sign = 1 - 2 * flip.to(images.dtype)  # -1 mirrors the box left-right
    theta[:, 0, 0] = sign * box_w / width
    theta[:, 0, 2] = (2 * left + box_w) / width - 1
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = (2 * top + box_h) / height - 1
    grid = F.affine_grid(theta, [count, channels, *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` window of ``[..., H, W]`` (offsets rounded as ``CenterCrop``)."""
    height, width = images.shape[-2:]
    top, left = round((height - size[0]) / 2), round((width - size[1]) / 2)
    return images[..., top : top + size[0], left : left + size[1]]
