"""Single image files read with PIL, and :class:`ImageFiles`, a split kept as files.

Every function here turns one file into a ``uint8 [C, H, W]`` tensor, the way torchvision's
reference transforms treat a PIL image (``Resize`` and ``RandomResizedCrop`` resize with PIL's
bilinear filter, which smooths when shrinking). A file PIL cannot decode raises
:class:`UnreadableImage`, whose one-line message names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from kdsearch.data.crops import ResizedCrop, center_crop, sample_boxes
from kdsearch.errors import KdsearchError, first_line

# torchvision's IMG_EXTENSIONS: the files ImageFolder takes for images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}  # PIL mode of each channel count
# what PIL raises for a file that is not an image or is damaged
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class UnreadableImage(KdsearchError):
    """An image file that PIL cannot decode."""


@dataclass(frozen=True)
class ImageFiles:
    """A split kept as image files, decoded while its batches are made (the streamed path).

    It stands where the decoded ``uint8 [N, C, H, W]`` tensor would: ``len()``, ``shape``
    (``H, W``: ``size``, the stored size evaluation views are centre-cropped from) and
    ``files[index]`` (an index tensor, list or slice: those files, in that order).
    ``workers``: the DataLoader worker processes that decode them.
    """

    paths: tuple[str, ...]
    channels: int
    size: tuple[int, int]
    workers: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: torch.Tensor | list[int] | slice) -> ImageFiles:
        if isinstance(index, slice):
            return dataclasses.replace(self, paths=self.paths[index])
        picked = torch.as_tensor(index).reshape(-1).tolist()
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in picked))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.channels, *self.size))


def open_image(path: str, channels: int) -> Image.Image:
    """The decoded image at ``path`` in the mode of ``channels`` (``L`` or ``RGB``)."""
    try:
        with Image.open(path) as image:
            return image.convert(MODES[channels])
    except DECODE_ERRORS as err:
        raise UnreadableImage(f"{path}: cannot read this image ({first_line(err)})") from None


def check_header(path: str) -> torch.Tensor:
    """Raise :class:`UnreadableImage` unless PIL recognises ``path`` (reads the header only)."""
    try:
        with Image.open(path):
            return torch.zeros(())
    except DECODE_ERRORS as err:
        raise UnreadableImage(f"{path}: cannot read this image ({first_line(err)})") from None


def stored_view(path: str, *, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """The image resized to cover ``size`` (aspect ratio kept: torchvision's ``Resize`` of
    the shorter side for a square ``size``), centre-cropped to ``size``."""
    image = open_image(path, channels)
    width, height = image.size
    if size[0] / height >= size[1] / width:  # the height is the short side, relatively
        new_h, new_w = size[0], max(size[1], int(width * size[0] / height))
    else:
        new_h, new_w = max(size[0], int(height * size[1] / width)), size[1]
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return center_crop(to_tensor(image), size).contiguous()


def eval_view(path: str, *, channels: int, stored: tuple[int, int],
              size: tuple[int, int]) -> torch.Tensor:
    """Evaluation input: :func:`stored_view`, centre-cropped to ``size`` (as the device does
    for a decoded split, so both paths give the same pixels)."""
    return center_crop(stored_view(path, channels=channels, size=stored), size).contiguous()


def train_view(path: str, seed: int, *, channels: int, crop: ResizedCrop,
               hflip: bool) -> torch.Tensor:
    """Training input: ``RandomResizedCrop(crop.size)`` of the whole image, then a random
    mirror if ``hflip``; every draw from a generator seeded by ``seed`` (one per view)."""
    image = open_image(path, channels)
    generator = torch.Generator().manual_seed(seed)
    width, height = image.size
    top, left, box_h, box_w = (int(v) for v in sample_boxes(
        1, height, width, generator, crop.scale, crop.ratio))
    box = (left, top, left + box_w, top + box_h)
    image = image.resize(crop.size[::-1], Image.Resampling.BILINEAR, box=box)
    view = to_tensor(image)
    if hflip and bool(torch.rand(1, generator=generator) < 0.5):
        view = view.flip(-1)
    return view.contiguous()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """``uint8 [C, H, W]`` of an ``L`` or ``RGB`` image."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
