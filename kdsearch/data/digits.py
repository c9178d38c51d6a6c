"""``digits``: scikit-learn's bundled 8x8 handwritten digits (offline, 1,797 images)."""

from __future__ import annotations

import torch

from kdsearch.data.base import ImageDataset
from kdsearch.data.batches import channel_stats
from kdsearch.data.registry import register_dataset

TEST_SIZE = 360  # 1,437 train / 360 test
SPLIT_SEED = 0  # the split is part of the dataset: independent of any training seed
MAX_VALUE = 16  # sklearn's pixel values are integers 0..16


@register_dataset("digits")
def load_digits_dataset() -> ImageDataset:
    """The digits as ``uint8 [N, 1, 8, 8]`` (0..16 scaled to 0..255), fixed stratified split.

    Mean/std come from the train split. Augmentation: crop after padding by 1, no flip
    (a mirrored digit is a different or no digit).
    """
    from sklearn.datasets import load_digits  # imported here: a second of start-up otherwise
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = _to_uint8(torch.from_numpy(bunch.images)).unsqueeze(1)  # [N, 1, 8, 8]
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=TEST_SIZE,
        stratify=labels.numpy(),
        random_state=SPLIT_SEED,
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train_images = images[train_idx].contiguous()
    mean, std = channel_stats(train_images)
    return ImageDataset(
        name="digits",
        train_images=train_images,
        train_labels=labels[train_idx].contiguous(),
        test_images=images[test_idx].contiguous(),
        test_labels=labels[test_idx].contiguous(),
        num_classes=10,
        mean=mean,
        std=std,
        crop_padding=1,
        hflip=False,
    )


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """Scale 0..MAX_VALUE to 0..255, rounded."""
    return (values.double() * (255 / MAX_VALUE)).round().clamp(0, 255).to(torch.uint8)
