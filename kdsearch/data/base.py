"""The in-memory dataset every kdsearch command works on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kdsearch.data.crops import ResizedCrop

if TYPE_CHECKING:
    from kdsearch.data.imagefiles import ImageFiles


@dataclass
class ImageDataset:
    """A whole image-classification dataset held as uint8 tensors.

    Images are ``uint8 [N, C, H, W]``; labels ``int64 [N]``. ``mean``/``std`` are per channel,
    on the 0..1 scale. Training augmentation is a random crop after zero padding by
    ``crop_padding`` pixels (0: none) and, if ``hflip``, a random horizontal flip.

    With ``crop`` (datasets of any resolution, e.g. ``imagefolder``), the images are stored
    larger than the model input and ``crop`` takes their place: torchvision's
    ``RandomResizedCrop`` (+ flip if ``hflip``) when training, a centre crop when evaluating,
    at ``crop.size`` (:mod:`kdsearch.data.crops`); ``crop_padding`` is then 0. A split too
    large to decode is kept as :class:`~kdsearch.data.imagefiles.ImageFiles` instead of a
    tensor, and its batches are decoded from disk (:mod:`kdsearch.data.stream`).
    ``class_names``: the name of each label, where the data has names.
    """

    name: str
    train_images: torch.Tensor | ImageFiles
    train_labels: torch.Tensor
    test_images: torch.Tensor | ImageFiles
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    hflip: bool = True
    crop: ResizedCrop | None = None
    class_names: tuple[str, ...] = ()

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the model input: the images', or ``crop.size``."""
        c, h, w = self.train_images.shape[1:]
        if self.crop is not None:
            h, w = self.crop.size
        return int(c), int(h), int(w)
