"""``synthetic``: seeded random images whose labels can be learnt, for smoke tests.

Recipe (all draws from one generator seeded by ``data_seed``, independent of training seeds):

1. every class gets a random coarse *template*: a ``C x 4 x 4`` grid of grey levels, made
   left-right symmetric (so flip augmentation keeps the class), upsampled (nearest) to
   ``H x W``;
2. every image gets a label drawn uniformly from the classes and uniform noise in 0..255;
3. ``image = round(SIGNAL * template[label] + (1 - SIGNAL) * noise)`` as uint8.

With ``SIGNAL = 0.3`` the class is visible but noisy: a small network's loss goes down in a
few steps, and accuracy well above chance needs some training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdsearch.data.base import ImageDataset
from kdsearch.data.batches import channel_stats
from kdsearch.data.registry import register_dataset
from kdsearch.errors import KdsearchError

DEFAULT_INPUT_SIZE = (3, 32, 32)
DEFAULT_NUM_CLASSES = 10
SIGNAL = 0.3  # share of the class template in each pixel; the rest is noise
TEMPLATE_GRID = 4  # templates are TEMPLATE_GRID x TEMPLATE_GRID before upsampling


@register_dataset("synthetic")
def load_synthetic(
    *,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    num_train: int = 512,
    num_test: int = 128,
    data_seed: int = 0,
) -> ImageDataset:
    """``num_train``/``num_test`` random images of ``input_size`` ``(C, H, W)`` in ``num_classes``.

    Defaults: ``(3, 32, 32)`` and 10 classes. Crop padding is ``H // 8`` (4 at 32x32), flips on.
    Bad sizes raise :class:`KdsearchError`.
    """
    channels, height, width = _checked_size(input_size or DEFAULT_INPUT_SIZE)
    classes = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
    _check_counts(classes, num_train, num_test)
    generator = torch.Generator().manual_seed(data_seed)
    templates = _class_templates(classes, (channels, height, width), generator)
    train_images, train_labels = _draw_images(templates, num_train, generator)
    test_images, test_labels = _draw_images(templates, num_test, generator)
    mean, std = channel_stats(train_images)
    return ImageDataset(
        name="synthetic",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=classes,
        mean=mean,
        std=std,
        crop_padding=height // 8,
        hflip=True,
    )


def _class_templates(
    classes: int, size: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """Float ``[classes, C, H, W]`` in 0..255: symmetric coarse random patterns, upsampled."""
    channels, height, width = size
    grid = (min(TEMPLATE_GRID, height), min(TEMPLATE_GRID, width))
    coarse = torch.rand(classes, channels, *grid, generator=generator) * 255
    coarse = (coarse + coarse.flip(-1)) / 2  # left-right symmetric
    return F.interpolate(coarse, size=(height, width), mode="nearest")


def _draw_images(
    templates: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uint8 images mixing their class template with uniform noise, and the labels."""
    labels = torch.randint(0, len(templates), (count,), generator=generator)
    noise = torch.rand(count, *templates.shape[1:], generator=generator) * 255
    images = SIGNAL * templates[labels] + (1 - SIGNAL) * noise
    return images.round().clamp(0, 255).to(torch.uint8), labels


def _checked_size(size: object) -> tuple[int, int, int]:
    """``size`` as a ``(C, H, W)`` tuple of positive ints, else :class:`KdsearchError`."""
    try:
        channels, height, width = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise KdsearchError(f"input_size must be (C, H, W), not {size!r}") from None
    if min(channels, height, width) < 1:
        raise KdsearchError(f"input_size must be positive, not {size!r}")
    return channels, height, width


def _check_counts(classes: int, num_train: int, num_test: int) -> None:
    """Raise :class:`KdsearchError` unless there are >= 2 classes and >= 1 image per split."""
    if classes < 2:
        raise KdsearchError(f"num_classes must be at least 2, not {classes}")
    if num_train < 1 or num_test < 1:
        raise KdsearchError(
            f"synthetic needs at least 1 image per split, not {num_train}/{num_test}"
        )
