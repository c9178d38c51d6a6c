"""The compact CIFAR-100 that travels to a rented GPU: protocol (b)'s training images only.

The search-quality protocol (b) trains on a seeded 10,000-image subset of the CIFAR-100 train
split (``--subset 10000``, seed 0) and tests on the whole 10,000-image test split. The official
archive (138 MB) is over the 64 MiB one upload may carry; these 20,000 images, as uint8
arrays run through xz with a delta filter, take about 44 MB. Make it once, on a machine with
the data::

    python bench/gpu/compact.py ../shared/data bench/gpu/data/cifar100-b.xz

:func:`load_compact` reads it back as the :class:`~kdsearch.data.ImageDataset` that
``load_dataset("cifar100", subset=10000)`` gives (same images, labels, order, normalisation
and augmentation), checked against the SHA-256 of its arrays stored beside them.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import torch

from kdsearch.data import ImageDataset, load_dataset

SUBSET, SEED = 10_000, 0  # protocol (b): `kdsearch compare ... --subset 10000` (first seed 0)
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# delta of neighbouring bytes (pixels of a row), then LZMA2 at its strongest: 0.70 of raw
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1},
           {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def write_compact(dataset: ImageDataset, out: str | Path, **meta) -> dict:
    """``dataset``'s arrays into the xz file ``out`` (with ``meta`` and their checksums)."""
    arrays = {key: getattr(dataset, key).numpy() for key in KEYS}
    meta = {"name": dataset.name, "num_classes": dataset.num_classes, "mean": dataset.mean,
            "std": dataset.std, "crop_padding": dataset.crop_padding, "hflip": dataset.hflip,
            **meta,
            "sha256": {key: _digest(array) for key, array in arrays.items()}}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, filters=FILTERS))
    partial.replace(out)
    return meta


def protocol_b_data(data_dir: str | Path) -> ImageDataset:
    """CIFAR-100 from ``data_dir`` with protocol (b)'s train subset."""
    return load_dataset("cifar100", data_dir=data_dir, download=False, subset=SUBSET, seed=SEED)


def load_compact(path: str | Path) -> ImageDataset:
    """The dataset written by :func:`write_compact`, its arrays checked."""
    with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as stored:
        meta = json.loads(stored["meta"].tobytes())
        arrays = {key: stored[key] for key in KEYS}
    for key, array in arrays.items():
        if _digest(array) != meta["sha256"][key]:
            raise ValueError(f"{path}: {key} does not match its checksum (corrupt copy?)")
    options = ("name", "num_classes", "crop_padding", "hflip")
    return ImageDataset(**{k: torch.from_numpy(a) for k, a in arrays.items()},
                        **{key: meta[key] for key in options},
                        mean=tuple(meta["mean"]), std=tuple(meta["std"]))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def describe(dataset: ImageDataset) -> str:
    return (f"CIFAR-100, protocol (b)'s {len(dataset.train_labels):,}-image train subset "
            f"(--subset {SUBSET}, seed {SEED}) and {len(dataset.test_labels):,} test images")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/gpu/compact.py DATA_DIR OUT.xz")
    written = write_compact(protocol_b_data(sys.argv[1]), sys.argv[2], subset=SUBSET,
                            subset_seed=SEED)
    size = Path(sys.argv[2]).stat().st_size
    print(f"{sys.argv[2]}: {size / 1e6:.1f} MB, {json.dumps(written['sha256'])[:80]}...")
