"""The in-memory dataset every kdsearch command works on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    """A whole image-classification dataset held as uint8 tensors.

    Images are ``uint8 [N, C, H, W]``; labels ``int64 [N]``. ``mean``/``std`` are per channel,
    on the 0..1 scale. Training augmentation is a random crop after zero padding by
    ``crop_padding`` pixels (0: none) and, if ``hflip``, a random horizontal flip.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    hflip: bool = True

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)
