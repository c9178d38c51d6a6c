"""``cifar10`` and ``cifar100`` from the official "python version" layout.

``data_dir`` (default ``~/.cache/kdsearch/data``) may hold the extracted folder
(``cifar-100-python/``, ``cifar-10-batches-py/``) or the archive (``cifar-100-python.tar.gz``
or ``.tar.xz``, ``cifar-10-python.tar.gz``), or be that folder or archive itself. Archives are
read in place, member by member, without extracting; the decoded arrays are then cached
(see :func:`cache_path`), so later commands load in about a second instead of 15 s. When
nothing is found and ``download`` is on, the official archive is downloaded and checked
against its official md5.

Security: the format is Python pickles, and unpickling can run code. Only use archives from a
trusted source (the official site, or your own copy of it). kdsearch unpickles only the
official member names, with an unpickler that resolves only the few numpy globals an array
needs; anything else in the file is refused as corrupt.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

from kdsearch.data.base import ImageDataset
from kdsearch.data.registry import register_dataset
from kdsearch.errors import KdsearchError
from kdsearch.io import atomic_write, save_torch

DEFAULT_DATA_DIR = Path("~/.cache/kdsearch/data")
PIXELS = 3 * 32 * 32  # one row: channel-planar R|G|B of a 32x32 image


@dataclass(frozen=True)
class CifarFormat:
    """Where a CIFAR variant's files are, what they hold, and how to normalise it."""

    title: str
    folder: str  # the folder inside the archive
    archives: tuple[str, ...]  # archive file names looked for in data_dir; [0] is downloaded
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


FORMATS: dict[str, CifarFormat] = {
    "cifar100": CifarFormat(
        title="CIFAR-100",
        folder="cifar-100-python",
        archives=("cifar-100-python.tar.gz", "cifar-100-python.tar.xz"),
        train_members=("train",),
        test_members=("test",),
        label_key="fine_labels",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
    "cifar10": CifarFormat(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archives=("cifar-10-python.tar.gz",),
        train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_members=("test_batch",),
        label_key="labels",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
}

# (train rows, test rows) of the real data; tests replace this to load a small fake archive.
EXPECTED_COUNTS: dict[str, tuple[int, int]] = {
    "cifar100": (50_000, 10_000),
    "cifar10": (50_000, 10_000),
}

# What a truncated or corrupt archive or pickle can raise while being read.
READ_ERRORS = (
    tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, OSError,
    pickle.UnpicklingError, KeyError, IndexError, ValueError, TypeError, AttributeError,
    OverflowError,
)  # fmt: skip

# The globals a pickled numpy array needs (numpy 1 and 2 spellings); nothing else resolves.
ALLOWED_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    | {(f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")}
    | {(f"numpy.{core}.multiarray", "scalar") for core in ("core", "_core")}
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}
)


@register_dataset("cifar100")
def load_cifar100(*, data_dir: str | Path | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test ``uint8 [N, 3, 32, 32]`` images."""
    return load_cifar("cifar100", data_dir, download)


@register_dataset("cifar10")
def load_cifar10(*, data_dir: str | Path | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test ``uint8 [N, 3, 32, 32]`` images."""
    return load_cifar("cifar10", data_dir, download)


def load_cifar(name: str, data_dir: str | Path | None, download: bool) -> ImageDataset:
    """Find (or download), read and check CIFAR variant ``name``; user errors name the file."""
    fmt = FORMATS[name]
    source = locate(fmt, data_dir, download)
    splits = read_cache(source, fmt) if source.is_file() else None
    if splits is None:
        batches = read_members(source, fmt)
        splits = (*decode_split(source, fmt, batches, fmt.train_members),
                  *decode_split(source, fmt, batches, fmt.test_members))
        if source.is_file():
            write_cache(source, fmt, splits)
    train_images, train_labels, test_images, test_labels = splits
    counts = (len(train_labels), len(test_labels))
    if counts != EXPECTED_COUNTS[name]:
        raise KdsearchError(
            f"{source}: {fmt.title} has {counts[0]} train / {counts[1]} test images, "
            f"expected {EXPECTED_COUNTS[name][0]} / {EXPECTED_COUNTS[name][1]}"
        )
    if (found := len(torch.unique(train_labels))) != fmt.num_classes:
        raise KdsearchError(
            f"{source}: {fmt.title} train split has {found} classes, not {fmt.num_classes}"
        )
    return ImageDataset(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=fmt.num_classes,
        mean=fmt.mean,
        std=fmt.std,
        crop_padding=4,
        hflip=True,
    )


SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_path(source: Path, fmt: CifarFormat) -> Path:
    """Where the decoded arrays of archive ``source`` are cached: under ``KDSEARCH_CACHE``
    (default ``~/.cache/kdsearch``), named by the archive's path, size and modification time,
    so a changed archive is decoded again. The user's data folder is never written to."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("KDSEARCH_CACHE") or "~/.cache/kdsearch").expanduser()
    return root / "decoded" / f"{fmt.folder}-{digest}.pt"


def read_cache(source: Path, fmt: CifarFormat) -> tuple[torch.Tensor, ...] | None:
    """The cached decoded splits of ``source`` (checked like a fresh decode), or None."""
    path = cache_path(source, fmt)
    try:
        state = torch.load(path, weights_only=True)
        splits = tuple(state[key] for key in SPLIT_KEYS)
    except Exception:  # absent, unreadable or from another version: decode the archive
        return None
    images_ok = all(t.dtype == torch.uint8 and t.shape[1:] == (3, 32, 32) for t in splits[::2])
    labels_ok = all(t.dtype == torch.int64 and t.dim() == 1 for t in splits[1::2])
    return splits if images_ok and labels_ok and state.get("folder") == fmt.folder else None


def write_cache(source: Path, fmt: CifarFormat, splits: tuple[torch.Tensor, ...]) -> None:
    """Cache the decoded splits (atomically); a cache that cannot be written is skipped."""
    with contextlib.suppress(OSError):  # a read-only home: decode again next time
        save_torch(cache_path(source, fmt), {"folder": fmt.folder, **dict(zip(
            SPLIT_KEYS, (t.contiguous() for t in splits), strict=True))})


def locate(fmt: CifarFormat, data_dir: str | Path | None, download: bool) -> Path:
    """The extracted folder or archive to read: found in/as ``data_dir``, else downloaded."""
    root = (DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)).expanduser()
    if root.is_file():
        return root  # the archive itself
    if (root / fmt.train_members[0]).is_file():
        return root  # the extracted folder itself
    if (root / fmt.folder).is_dir():
        return root / fmt.folder
    for archive in fmt.archives:
        if (root / archive).is_file():
            return root / archive
    by_hand = (f"place {fmt.archives[0]} ({fmt.url}, md5 {fmt.md5}) in {root}, or pass "
               "--data-dir to the folder that holds it")
    if not download:
        what = "no such directory" if not root.exists() else f"no {fmt.title} here"
        looked = " or ".join([f"{fmt.folder}/", *fmt.archives])
        raise KdsearchError(f"{root}: {what} (looked for {looked}); allow download or fix the path")
    if data_dir is not None and root.is_dir() and any(root.iterdir()):
        # a folder of the user's that holds other data is read, never written
        raise KdsearchError(f"{root}: no {fmt.title} here, and kdsearch does not download into "
                            f"a data folder that holds other files; {by_hand} (or give an "
                            "empty --data-dir, or none: the cache, to download into)")
    created = _missing_folders(root)
    try:
        return download_file(fmt.url, root / fmt.archives[0], fmt.md5)
    except KdsearchError as err:
        for folder in created:  # a failed command leaves no empty data folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise KdsearchError(f"{err}; {by_hand}") from None


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def download_file(url: str, dest: str | Path, md5: str, *, chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renamed into place once its md5
    matches (:func:`kdsearch.io.atomic_write`).

    A failed download or a checksum mismatch removes the temporary file, leaves ``dest`` alone
    and raises :class:`KdsearchError`. Any URL urllib opens works (``file://`` in tests).
    """

    def fetch(out: IO[bytes]) -> None:
        digest = _stream_to(url, out, chunk_size)
        if digest != md5:
            raise KdsearchError(f"{url}: md5 {digest} does not match the expected {md5}; discarded")

    try:
        return atomic_write(dest, fetch)
    except OSError as err:
        raise KdsearchError(f"{Path(dest).parent}: cannot download into it "
                            f"({err.strerror or err})") from None


def _stream_to(url: str, out: IO[bytes], chunk_size: int) -> str:
    """Copy ``url`` into ``out`` with a progress bar; return the md5 hex digest of the bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
                while block := response.read(chunk_size):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise KdsearchError(
            f"{url}: download failed ({reason})"
        ) from None
    return digest.hexdigest()


def read_members(source: Path, fmt: CifarFormat) -> dict[str, Any]:
    """Unpickle the official train/test members from a folder or an archive, by member name."""
    wanted = fmt.train_members + fmt.test_members
    try:
        if source.is_dir():
            found = {
                name: _unpickle_path(source / name) for name in wanted if (source / name).is_file()
            }
        else:
            found = _read_archive(source, fmt.folder, wanted)
    except READ_ERRORS as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise KdsearchError(
            f"{source}: cannot read {fmt.title}, corrupt or truncated? ({reason})"
        ) from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise KdsearchError(f"{source}: {fmt.title} file {fmt.folder}/{missing[0]} is missing")
    return found


def decode_split(
    source: Path, fmt: CifarFormat, batches: dict[str, Any], members: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate checked member batches into ``uint8 [N, 3, 32, 32]`` and ``int64 [N]``."""
    parts = [_checked_batch(source, fmt, member, batches[member]) for member in members]
    rows = parts[0][0] if len(parts) == 1 else np.concatenate([data for data, _ in parts])
    images = torch.from_numpy(rows).reshape(-1, 3, 32, 32)
    labels = torch.cat([labels for _, labels in parts])
    return images, labels


def _checked_batch(
    source: Path, fmt: CifarFormat, member: str, batch: Any
) -> tuple[np.ndarray, torch.Tensor]:
    """The rows and labels of one member, after checking its structure and label range."""
    where = f"{source}: {fmt.folder}/{member}"
    if not isinstance(batch, dict):
        raise KdsearchError(f"{where}: expected a dict, found {type(batch).__name__}")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or fmt.label_key not in batch:
        raise KdsearchError(
            f"{where}: needs keys 'data' and {fmt.label_key!r}, has {sorted(batch)}"
        )
    data = batch["data"]
    if not _is_pixel_rows(data):
        shape = getattr(data, "shape", "?")
        raise KdsearchError(f"{where}: data must be uint8 [N, {PIXELS}], found {shape}")
    labels = torch.as_tensor(np.asarray(batch[fmt.label_key], dtype=np.int64))
    if labels.shape != (len(data),):
        raise KdsearchError(f"{where}: {len(data)} images but {tuple(labels.shape)} labels")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < fmt.num_classes:
        raise KdsearchError(f"{where}: labels outside 0..{fmt.num_classes - 1}")
    rows = data if data.flags.c_contiguous and data.flags.writeable else np.array(data, order="C")
    return rows, labels


def _is_pixel_rows(data: Any) -> bool:
    """Whether ``data`` is a ``uint8 [N, PIXELS]`` numpy array."""
    is_uint8 = isinstance(data, np.ndarray) and data.dtype == np.uint8
    return is_uint8 and data.ndim == 2 and data.shape[1] == PIXELS


def _read_archive(path: Path, folder: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    """Unpickle the ``folder/name`` members of a tar archive, in one sequential pass."""
    names = {f"{folder}/{name}": name for name in wanted}
    found: dict[str, Any] = {}
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            name = names.get(member.name.removeprefix("./"))
            if name is not None and member.isfile():
                found[name] = _unpickle(archive.extractfile(member))
                if len(found) == len(names):
                    break
    return found


def _unpickle_path(path: Path) -> Any:
    with open(path, "rb") as file:
        return _unpickle(file)


def _unpickle(file: IO[bytes] | None) -> Any:
    """Load one official CIFAR pickle (Python 2 strings decoded as latin1)."""
    if file is None:
        raise tarfile.ReadError("member has no data")
    return _NumpyOnlyUnpickler(file, encoding="latin1").load()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)
