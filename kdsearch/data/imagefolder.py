"""``imagefolder``: your own images in torchvision's ImageFolder layout, at any resolution.

``data_dir`` holds ``train/CLASS/IMAGE`` and ``val/CLASS/IMAGE`` (``test/`` is taken when
there is no ``val/``); the class folders of the two splits must be the same. Images are the
files ending in one of :data:`~kdsearch.data.imagefiles.IMAGE_EXTENSIONS` at any depth under
a class folder (hidden files are skipped); labels follow the sorted class names. The folder
is only read, never written.

Model input is ``input_size`` (default 3,224,224; 1 channel reads the images as grayscale)
through torchvision's reference transforms (:mod:`kdsearch.data.crops`):
``RandomResizedCrop`` + horizontal flip when training, resize to ``input / 0.875`` + centre
crop when evaluating, normalised with the ImageNet mean/std (``normalize="data"``: the train
split's own, measured on its stored images, at most :data:`STATS_IMAGES` of them).

Memory rule: the images are *decoded once* when the decoded splits fit the budget, else
*streamed*. Decoded, every image is stored at the stored size ``floor(side / 0.875)`` (36 x 36
for 32 x 32 input, 256 x 256 for 224 x 224: resized to cover it, centre-cropped), so
``train + val`` takes ``N * C * H_s * W_s`` bytes, and is then cropped on the device per batch
(:class:`~kdsearch.data.batches.DeviceBatches`): training crops come from that central
square, a close stand-in for cropping the whole image. The budget is
``KDSEARCH_DECODE_BUDGET`` (bytes, e.g. ``512M``, ``20G``; ``0`` always streams) when set,
else the smaller of :data:`DEFAULT_BUDGET` (4 GiB) and a quarter of the memory available
now. Streamed (:class:`~kdsearch.data.stream.StreamBatches`), each batch is decoded from the
files by DataLoader workers (``workers``, default ``KDSEARCH_DATA_WORKERS`` or the cores
but one, at most 8), with ``RandomResizedCrop`` on the whole image, and reaches a CUDA device
through pinned memory. ``stream=True``/``False`` chooses the path outright.

A missing folder, a class folder without images, class folders that differ between the
splits and an image PIL cannot read each raise a one-line :class:`KdsearchError` naming it.
Streaming checks every file's header when loading; a file damaged past its header fails
when its batch is made.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path

import torch

from kdsearch.data.base import ImageDataset
from kdsearch.data.crops import ResizedCrop, stored_size
from kdsearch.data.imagefiles import IMAGE_EXTENSIONS, MODES, ImageFiles, check_header, stored_view
from kdsearch.data.registry import register_dataset
from kdsearch.data.stream import default_workers, map_files
from kdsearch.errors import KdsearchError

DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_BUDGET = 4 * 2**30  # bytes of decoded images, at most (see the module docstring)
STATS_IMAGES = 5000  # normalize="data": measured on at most this many train images
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYOUT = "DIR/train/CLASS/IMAGE and DIR/val/CLASS/IMAGE"
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@register_dataset("imagefolder")
def load_imagefolder(
    *,
    data_dir: str | Path | None = None,
    input_size: tuple[int, int, int] | None = None,
    normalize: str = "imagenet",
    stream: bool | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """The images under ``data_dir`` (see the module docstring for the layout and rules)."""
    if data_dir is None:
        raise KdsearchError(f"dataset imagefolder needs --data-dir DIR with {LAYOUT}")
    channels, height, width = _checked_size(input_size or DEFAULT_INPUT_SIZE)
    if normalize not in ("imagenet", "data"):
        raise KdsearchError(f"normalize must be 'imagenet' or 'data', not {normalize!r}")
    classes, train, val = list_folder(Path(data_dir).expanduser())
    crop = ResizedCrop((height, width))
    workers = default_workers() if workers is None else workers
    files = [ImageFiles(tuple(paths), channels, stored_size(crop.size), workers)
             for paths, _ in (train, val)]
    if stream is None:
        stream = decoded_bytes(files) > decode_budget()
    images = [checked_files(split) if stream else decode(split) for split in files]
    mean, std = _normalisation(normalize, channels, images[0])
    return ImageDataset(
        name="imagefolder", train_images=images[0], train_labels=torch.tensor(train[1]),
        test_images=images[1], test_labels=torch.tensor(val[1]), num_classes=len(classes),
        mean=mean, std=std, crop_padding=0, hflip=True, crop=crop, class_names=tuple(classes))


def list_folder(root: Path) -> tuple[list[str], tuple[list[str], list[int]],
                                     tuple[list[str], list[int]]]:
    """The sorted class names, and the (paths, labels) of the train and val splits."""
    if not root.is_dir():
        raise KdsearchError(f"{root}: no such directory (imagefolder expects {LAYOUT})")
    train_dir = root / "train"
    val_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    for split, found in (("train", train_dir.is_dir()), ("val", val_dir is not None)):
        if not found:
            raise KdsearchError(f"{root}: no {split}/ folder (imagefolder expects {LAYOUT})")
    classes = _class_names(train_dir)
    _check_same_classes(train_dir, classes, val_dir)
    return classes, _split_files(train_dir, classes), _split_files(val_dir, classes)


def _class_names(split_dir: Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))
    if len(names) < 2:
        raise KdsearchError(f"{split_dir}: {len(names)} class folder(s), imagefolder needs at "
                            f"least 2 ({LAYOUT})")
    return names


def _check_same_classes(train_dir: Path, classes: list[str], val_dir: Path) -> None:
    found = {p.name for p in val_dir.iterdir() if p.is_dir() and _visible(p)}
    missing, extra = sorted(set(classes) - found), sorted(found - set(classes))
    if missing or extra:
        parts = [f"missing {', '.join(missing)}" if missing else "",
                 f"not in train/: {', '.join(extra)}" if extra else ""]
        raise KdsearchError(f"{val_dir}: class folders differ from {train_dir} "
                            f"({'; '.join(p for p in parts if p)})")


def _split_files(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Every image file under each class folder, sorted, and its label."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(str(p) for p in (split_dir / name).rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and _visible(p) and p.is_file())
        if not found:
            raise KdsearchError(f"{split_dir / name}: empty class folder (no "
                                f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS[:3])}... images)")
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def decoded_bytes(splits: list[ImageFiles]) -> int:
    """Bytes the splits take decoded at their stored size (uint8)."""
    return sum(split.shape.numel() for split in splits)


def decode_budget() -> int:
    """``KDSEARCH_DECODE_BUDGET`` if set, else min(4 GiB, a quarter of the available memory)."""
    given = os.environ.get("KDSEARCH_DECODE_BUDGET")
    if given is not None:
        return parse_bytes(given)
    available = available_memory()
    return DEFAULT_BUDGET if available is None else min(DEFAULT_BUDGET, available // 4)


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912 (K, M, G, T are powers of 1024; an optional ``iB``/``B``)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if found is None:
        raise KdsearchError(f"KDSEARCH_DECODE_BUDGET must be a size like 512M or 20G, not "
                            f"{text!r}")
    return int(float(found.group(1)) * UNITS[found.group(2).upper()])


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decode(files: ImageFiles) -> torch.Tensor:
    """Every file at its stored size, ``uint8 [N, C, H_s, W_s]``."""
    images = torch.empty(tuple(files.shape), dtype=torch.uint8)
    read = partial(stored_view, channels=files.channels, size=files.size)
    start = 0
    for batch in map_files(files, read, "decoding images"):
        images[start : start + len(batch)] = batch
        start += len(batch)
    return images


def checked_files(files: ImageFiles) -> ImageFiles:
    """``files``, once PIL recognises the header of each."""
    for _ in map_files(files, check_header, "checking images", batch_size=256):
        pass
    return files


def _normalisation(normalize: str, channels: int,
                   train: torch.Tensor | ImageFiles) -> tuple[tuple[float, ...], ...]:
    """ImageNet's mean/std (their average for grayscale), or the train split's own."""
    if normalize == "imagenet":
        if channels == 1:
            return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
        return IMAGENET_MEAN, IMAGENET_STD
    if len(train) > STATS_IMAGES:
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        train = train[keep[:STATS_IMAGES].sort().values]
    if isinstance(train, ImageFiles):
        read = partial(stored_view, channels=train.channels, size=train.size)
        return channel_moments(map_files(train, read, "measuring mean/std"))
    return channel_moments(train.split(256))


def channel_moments(batches) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (sample) std on the 0..1 scale over ``uint8 [B, C, H, W]`` batches,
    accumulated in float64 batch by batch."""
    count, total, squares = 0, 0.0, 0.0
    for batch in batches:
        pixels = batch.double().div(255).transpose(0, 1).flatten(1)  # [C, B*H*W]
        count += pixels.shape[1]
        total = total + pixels.sum(1)
        squares = squares + pixels.square().sum(1)
    mean = total / count
    std = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _checked_size(size: object) -> tuple[int, int, int]:
    """``size`` as ``(C, H, W)`` with C in 1 or 3 and positive sides, else one line."""
    try:
        channels, height, width = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise KdsearchError(f"input_size must be (C, H, W), not {size!r}") from None
    if channels not in MODES or min(height, width) < 1:
        raise KdsearchError(f"imagefolder input_size must be 1 or 3 channels and positive "
                            f"sides, not {size!r}")
    return channels, height, width
