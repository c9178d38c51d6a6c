"""The files the deploy commands write: never over an existing file unless asked, and
atomically (:func:`kdsearch.io.atomic_write`), so a reader never sees half a file."""

from __future__ import annotations

from pathlib import Path

from kdsearch.errors import KdsearchError
from kdsearch.io import atomic_write


def refuse_existing(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a Path; an error if it exists (and ``overwrite`` is off) or is a folder.
    Called before the work, so a refusal costs nothing."""
    path = Path(path)
    if path.is_dir():
        raise KdsearchError(f"{path} is a directory; --out needs a file name")
    if path.exists() and not overwrite:
        raise KdsearchError(f"{path} exists; pass --overwrite to replace it")
    return path


def write_bytes(path: str | Path, data: bytes, overwrite: bool) -> Path:
    """Write ``data`` to ``path`` atomically (refused as :func:`refuse_existing` says)."""
    return atomic_write(refuse_existing(path, overwrite), lambda f: f.write(data))
